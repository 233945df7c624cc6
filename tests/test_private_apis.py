"""The private attributes of aiohttp and prometheus-client that the gateway relies on, checked
on real objects so that an upgrade which renames or reshapes one fails here, loudly, with the
attribute, the module of ours that needs it and what to do, rather than as a wrong route, a
missing metric or an AttributeError in production.

pyproject.toml bounds both libraries (``aiohttp<3.15``, ``prometheus-client<0.27``): raise a
bound only once this file passes on the new version.

What is relied on:

- aiohttp ``DynamicResource._pattern`` (the compiled path expression, one named group per
  variable, updated by ``add_prefix``) and the private ``Resource._match(path)`` hook that
  ``Resource.resolve`` calls with ``request.rel_url.path_safe``: ``gateway/http/routing.py``
  (``QuickDynamicResource`` overrides ``_match`` and matches with ``_pattern``, and undoes
  aiohttp's ``path_safe`` quoting of ``%2F`` and ``%25`` as aiohttp's own ``_match`` does);
- prometheus-client ``Histogram._buckets`` (one value per bucket, not cumulative, in the order
  of the bounds, +Inf last) and ``Histogram._sum``, each with ``.inc(amount)``, in-process and
  under ``PROMETHEUS_MULTIPROC_DIR``: ``gateway/observability/request_metrics.py``
  (``_Series.flush`` moves counts into them instead of calling ``observe()`` per request).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.http import routing
from gateway.http.routing import QuickDynamicResource
from gateway.observability import request_metrics
from gateway.observability.request_metrics import BOUNDS, _Series

ROUTING = "gateway/http/routing.py"
REQUEST_METRICS = "gateway/observability/request_metrics.py"


def broken(library: str, attribute: str, ours: str, relies: str, todo: str) -> str:
    """The failure message: what changed, who needs it, what to do."""
    return (f"{library} changed {attribute}: {ours} {relies}. {todo} Then raise the "
            f"{library} upper bound in pyproject.toml.")


ROUTING_TODO = ("Re-check QuickDynamicResource against aiohttp's DynamicResource.__init__, _match "
                "and Resource.resolve (or drop it and let routing.register fall back to "
                "router.add_routes).")


PATTERN = "/v1/feeds/{feed}/stops/{stop}/departures"


def _pattern_of(resource: web.DynamicResource) -> re.Pattern[str]:
    pattern = getattr(resource, "_pattern", None)
    assert isinstance(pattern, re.Pattern), broken(
        "aiohttp", f"DynamicResource._pattern (now {pattern!r})", ROUTING,
        "matches paths with this instance attribute, set by DynamicResource.__init__",
        ROUTING_TODO)
    return pattern


def test_dynamic_resource_pattern_is_a_compiled_expression_with_a_group_per_variable() -> None:
    for resource in (web.DynamicResource(PATTERN), QuickDynamicResource(PATTERN)):
        pattern = _pattern_of(resource)
        assert set(pattern.groupindex) == {"feed", "stop"}, broken(
            "aiohttp", f"what DynamicResource._pattern holds ({pattern.pattern!r})", ROUTING,
            "takes a variable's value from the named group of the same name", ROUTING_TODO)
        match = pattern.fullmatch("/v1/feeds/wmata/stops/A01/departures")
        assert match is not None and match.groupdict() == {"feed": "wmata", "stop": "A01"}, (
            broken("aiohttp", "DynamicResource._pattern's syntax", ROUTING,
                   "fullmatch()es it against request.rel_url.path_safe", ROUTING_TODO))
        assert pattern.fullmatch("/v1/feeds/wmata/stops/A/01/departures") is None, broken(
            "aiohttp", "DynamicResource._pattern's variables (they now match a '/')", ROUTING,
            "relies on a {name} variable never spanning two path segments", ROUTING_TODO)


def test_add_prefix_updates_the_pattern_the_quick_match_reads() -> None:
    """A sub-app mounted at a prefix rewrites ``_pattern``: the quick match must see that."""
    resource = QuickDynamicResource(PATTERN)
    resource.add_prefix("/api")
    assert _pattern_of(resource).pattern.startswith(re.escape("/api")), broken(
        "aiohttp", "DynamicResource.add_prefix (it no longer rewrites _pattern)", ROUTING,
        "matches with _pattern, so routes of a sub-app would no longer match", ROUTING_TODO)
    assert resource._match("/api/v1/feeds/f/stops/s/departures") == {"feed": "f", "stop": "s"}


def test_dynamic_resource_still_has_the_private_match_hook() -> None:
    assert callable(vars(web.DynamicResource).get("_match")), broken(
        "aiohttp", "Resource._match (DynamicResource no longer defines it)", ROUTING,
        "overrides it in QuickDynamicResource", ROUTING_TODO)
    assert "_match" in getattr(web.Resource, "__abstractmethods__", ()), broken(
        "aiohttp", "Resource._match (no longer the abstract hook of Resource)", ROUTING,
        "overrides it in QuickDynamicResource", ROUTING_TODO)


# Paths whose quoting matters: path_safe keeps %2F and %25 encoded, and "%252F" is a literal
# "%2F" in a variable, which a second decoding would turn into a "/".
QUOTED_PATHS = [
    "/v1/feeds/wmata/stops/A01/departures",
    "/v1/feeds/wm%2Fata/stops/a%25b/departures",
    "/v1/feeds/a%252Fb/stops/%2525/departures",
    "/v1/feeds/caf%C3%A9/stops/a%20b/departures",
]


async def _handler(request: web.Request) -> web.Response:
    return web.Response()


def _routers() -> tuple[web.UrlDispatcher, web.UrlDispatcher]:
    route = web.get(PATTERN, _handler)
    ours, theirs = web.UrlDispatcher(), web.UrlDispatcher()
    routing.register(ours, route)
    theirs.add_routes([route])
    return ours, theirs


async def test_resolve_calls_the_quick_match_with_path_safe_and_agrees_with_aiohttp(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ours, theirs = _routers()
    assert isinstance(next(iter(ours.resources())), QuickDynamicResource)
    seen: list[str] = []
    quick_match = QuickDynamicResource._match

    def spy(self: QuickDynamicResource, path: str) -> dict[str, str] | None:
        seen.append(path)
        return quick_match(self, path)

    monkeypatch.setattr(QuickDynamicResource, "_match", spy)
    for path in QUOTED_PATHS:
        seen.clear()
        request = make_mocked_request("GET", path)
        found = await ours.resolve(request)
        assert seen, broken(
            "aiohttp", "Resource.resolve (it no longer calls self._match)", ROUTING,
            "overrides _match to make matching cheaper; the override is now dead code",
            ROUTING_TODO)
        assert seen == [request.rel_url.path_safe], broken(
            "aiohttp", f"the path Resource.resolve passes to _match ({seen[0]!r}, not "
            f"rel_url.path_safe {request.rel_url.path_safe!r})", ROUTING,
            "decodes %2F and %25 itself, which is only right for path_safe", ROUTING_TODO)
        expected = await theirs.resolve(make_mocked_request("GET", path))
        assert dict(found) == dict(expected), broken(
            "aiohttp", f"DynamicResource._match's decoding (for {path!r}: aiohttp gives "
            f"{dict(expected)}, QuickDynamicResource {dict(found)})", ROUTING,
            "mirrors aiohttp's _unquote_path_safe (%2F -> '/', %25 -> '%')", ROUTING_TODO)


# prometheus-client


METRICS_TODO = ("Re-check _Series.flush against prometheus_client's Histogram._metric_init "
                "and observe() (or make flush call observe(), at its cost per value).")


@pytest.fixture
def histogram() -> Iterator[tuple[CollectorRegistry, Histogram, Counter]]:
    registry = CollectorRegistry()
    yield (registry,
           Histogram("t_seconds", "test", ["route"], buckets=BOUNDS, registry=registry),
           Counter("t_bytes", "test", ["route"], registry=registry))


def test_histogram_children_hold_buckets_and_sum(
        histogram: tuple[CollectorRegistry, Histogram, Counter]) -> None:
    _, family, _ = histogram
    child = family.labels("/x")
    buckets = getattr(child, "_buckets", None)
    assert isinstance(buckets, list), broken(
        "prometheus-client", f"Histogram._buckets (now {buckets!r})", REQUEST_METRICS,
        "increments a labelled child's _buckets[i] in _Series.flush", METRICS_TODO)
    assert len(buckets) == len(BOUNDS) + 1, broken(
        "prometheus-client", f"Histogram._buckets' length ({len(buckets)} for "
        f"{len(BOUNDS)} bounds)", REQUEST_METRICS,
        "counts len(BOUNDS) + 1 buckets (the last one +Inf) and adds them index by index",
        METRICS_TODO)
    total = getattr(child, "_sum", None)
    for name, value in [*((f"_buckets[{i}]", b) for i, b in enumerate(buckets)),
                        ("_sum", total)]:
        assert callable(getattr(value, "inc", None)), broken(
            "prometheus-client", f"Histogram.{name} (now {value!r}, without inc())",
            REQUEST_METRICS, f"calls {name}.inc(amount) in _Series.flush", METRICS_TODO)


def _samples(registry: CollectorRegistry, name: str, route: str) -> dict[str, float]:
    """The histogram's samples of ``route``, by sample name and ``le``: what a scrape shows."""
    return {sample.name + f"[{sample.labels.get('le', '')}]": sample.value
            for family in registry.collect() if family.name == name
            for sample in family.samples
            if sample.labels.get("route") == route and not sample.name.endswith("_created")}


VALUES = (0.0001, 0.0005, 0.0007, 0.002, 0.002, 0.01, 2.5, 3.0)  # bounds, between, above


def test_flushing_into_private_buckets_exposes_what_observe_does(
        histogram: tuple[CollectorRegistry, Histogram, Counter]) -> None:
    registry, family, counter = histogram
    series = _Series(family.labels("/flush"), counter.labels("/flush"))
    reference = family.labels("/observe")
    for value in VALUES:
        series.counts[bisect_left(BOUNDS, value)] += 1
        series.seconds += value
        reference.observe(value)
    series.flush()
    flushed, observed = (_samples(registry, "t_seconds", r) for r in ("/flush", "/observe"))
    assert observed["t_seconds_count[]"] == len(VALUES)
    assert flushed == observed, broken(
        "prometheus-client", "what Histogram._buckets/_sum mean (a count per bucket, in the "
        "order of the bounds, +Inf last, and the plain sum): flushed counts expose "
        f"{flushed}, observe() exposes {observed}", REQUEST_METRICS,
        "moves per-request counts into them in _Series.flush", METRICS_TODO)


CHILD = """
import sys
from gateway.observability import request_metrics as rm
from gateway.observability.metrics import _exposition
series = rm._Series(rm.REQUEST_SECONDS.labels("/flush", "GET", "200"),
                    rm.RESPONSE_BYTES.labels("/flush", "GET", "200"))
reference = rm.REQUEST_SECONDS.labels("/observe", "GET", "200")
for value in VALUES:
    series.counts[rm.bisect_left(rm.BOUNDS, value)] += 1
    series.seconds += value
    reference.observe(value)
series.flush()
sys.stdout.write(_exposition().decode())
"""


def _exposed(text: str, route: str) -> dict[str, str]:
    """The histogram's lines of ``route``: by sample name and ``le``, the value."""
    found = {}
    for line in text.splitlines():
        if line.startswith("tg_http_request_seconds") and f'route="{route}"' in line:
            sample, _, value = line.rpartition(" ")
            le = re.search(r'le="([^"]*)"', sample)
            found[sample.partition("{")[0] + (f"[{le.group(1)}]" if le else "")] = value
    return found


def test_flushing_under_multiprocess_files_exposes_what_observe_does(tmp_path: Path) -> None:
    """``serve --workers N``: the values are prometheus_client's memory-mapped ones, chosen when
    prometheus_client is imported, so in a process of its own."""
    env = {**os.environ, request_metrics.MULTIPROC_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", f"VALUES = {VALUES!r}\n{CHILD}"], env=env,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, broken(
        "prometheus-client", "Histogram._buckets/_sum in multiprocess mode (the child failed: "
        f"{done.stderr.strip().splitlines()[-1:]})", REQUEST_METRICS,
        "increments them in _Series.flush under PROMETHEUS_MULTIPROC_DIR", METRICS_TODO)
    flushed, observed = (_exposed(done.stdout, r) for r in ("/flush", "/observe"))
    assert observed and flushed == observed, broken(
        "prometheus-client", "Histogram._buckets/_sum in multiprocess mode: the files give "
        f"{flushed} for flushed counts, {observed} for observe()", REQUEST_METRICS,
        "increments them in _Series.flush under PROMETHEUS_MULTIPROC_DIR", METRICS_TODO)
