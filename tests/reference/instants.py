"""Query instants per static fixture (tests/fixtures/gtfs/<name>), chosen from the data.

Every instant below returns departures from tests/reference/gtfs_reference.py with
a window of WINDOW_S (and with 1800 s too). The counts in the comments are the
number of departures summed over every non-station stop of the feed for a 3600 s
window. "prev-day" counts those whose service_date is the day before their
local calendar date, i.e. times > 24:00:00 of the previous service day.

DST notes (America/Los_Angeles): on 2023-11-05 / 2019-11-03 (fall back) the
previous Saturday's 24:xx-25:xx trips land in the *first* 01:xx (PDT); nothing
runs in the second 01:xx (PST). On 2024-03-10 / 2019-03-10 (spring forward)
they land at 00:xx-01:xx PST. For a service day that has a DST change, times
are measured from noon minus 12h, so the first Sunday trains (07:12 Caltrain,
07:42 BART in stop_times.txt) depart at 07:12 / 07:42 wall-clock. An
implementation that counts from local midnight puts them one hour off.
"""

WINDOW_S = 3600

INSTANTS: dict[str, list[tuple[str, str]]] = {
    "caltrain-2023.zip": [
        ("weekday_peak_rt_clock", "2023-11-07T17:05:00-08:00"),  # Tue, 121
        ("weekday_late_evening", "2023-11-07T23:40:00-08:00"),  # 36, 21 prev-day
        ("dst_fall_back_0030_pdt", "2023-11-05T00:30:00-07:00"),  # 21, all prev-day (Sat)
        ("dst_fall_back_0130_pdt_first", "2023-11-05T01:30:00-07:00"),  # 3, prev-day
        ("dst_fall_back_0700_pst", "2023-11-05T07:00:00-08:00"),  # 10, first at 07:12
        ("dst_fall_back_1000_pst", "2023-11-05T10:00:00-08:00"),  # 40
        ("dst_spring_forward_0030_pst", "2024-03-10T00:30:00-08:00"),  # 21, all prev-day
        ("dst_spring_forward_0130_pst", "2024-03-10T01:30:00-08:00"),  # 3, prev-day
        ("dst_spring_forward_0700_pdt", "2024-03-10T07:00:00-07:00"),  # 10, first at 07:12
        ("dst_spring_forward_1000_pdt", "2024-03-10T10:00:00-07:00"),  # 40
    ],
    "bart-2019.zip": [
        ("weekday_peak", "2019-08-07T08:00:00-07:00"),  # Wed, 940
        ("weekday_rt_clock", "2019-08-07T10:45:00-07:00"),  # 840
        ("weekday_late_evening", "2019-08-07T23:40:00-07:00"),  # 244, 145 prev-day
        ("dst_spring_forward_0030_pst", "2019-03-10T00:30:00-08:00"),  # 112, all prev-day
        ("dst_spring_forward_0130_pst", "2019-03-10T01:30:00-08:00"),  # 2, prev-day
        ("dst_spring_forward_0730_pdt", "2019-03-10T07:30:00-07:00"),  # 112, first at 07:42
        ("dst_spring_forward_1000_pdt", "2019-03-10T10:00:00-07:00"),  # 400
        ("dst_fall_back_0030_pdt", "2019-11-03T00:30:00-07:00"),  # 112, all prev-day
        ("dst_fall_back_0130_pdt_first", "2019-11-03T01:30:00-07:00"),  # 2, prev-day
        ("dst_fall_back_0730_pst", "2019-11-03T07:30:00-08:00"),  # 112, first at 07:42
        ("dst_fall_back_1000_pst", "2019-11-03T10:00:00-08:00"),  # 400
    ],
    # Only 2022-02-22 (Tue) has service; many trips use frequencies.txt and pickup_type=1.
    "hsl-helsinki-2022-cropped.zip": [
        ("weekday_peak", "2022-02-22T08:00:00+02:00"),  # 14175
        ("weekday_midday", "2022-02-22T12:30:00+02:00"),  # 11438
        ("weekday_late_evening", "2022-02-22T23:40:00+02:00"),  # 3687, 2259 prev-day
        ("after_midnight", "2022-02-23T01:00:00+02:00"),  # 2456, all prev-day
    ],
    # calendar_dates.txt only, 2026-04-29..2026-09-06, no DST change; 98 stations.
    "wmata-2026.zip": [
        ("weekday_peak", "2026-05-05T08:00:00-04:00"),  # Tue, 2495
        ("weekday_late_evening", "2026-05-05T23:40:00-04:00"),  # 563, 249 prev-day
        ("friday_night_after_midnight", "2026-05-09T00:30:00-04:00"),  # 1571, all prev-day
        ("saturday_midday", "2026-05-09T12:00:00-04:00"),  # 1989
        ("first_day_morning", "2026-04-29T06:00:00-04:00"),  # 2218
    ],
    # Every trip is frequency-based (exact_times=0); weekend service (Sat+Sun) 14:30-21:30.
    "usf-bullrunner.zip": [
        ("weekday_rt_clock", "2017-09-13T10:52:00-04:00"),  # Wed, 1050
        ("weekday_late_evening", "2017-09-13T23:40:00-04:00"),  # 553, 201 prev-day
        ("dst_spring_forward_1500_edt", "2017-03-12T15:00:00-04:00"),  # Sun, 576
        ("dst_fall_back_1500_est", "2017-11-05T15:00:00-05:00"),  # Sun, 576
    ],
    # calendar 2023-03-18..2023-07-30, no DST change inside.
    "sound-transit-link-2023.zip": [
        ("weekday_peak", "2023-05-10T08:00:00-07:00"),  # Wed, 271
        ("weekday_late_evening", "2023-05-10T23:40:00-07:00"),  # 138, 92 prev-day
        ("friday_peak", "2023-05-12T17:00:00-07:00"),  # 269
        ("saturday_midday", "2023-07-29T12:00:00-07:00"),  # 216
    ],
}

# Instants at which the reference returns NO departure at any stop (negative checks).
EMPTY_INSTANTS: dict[str, list[tuple[str, str]]] = {
    "caltrain-2023.zip": [
        ("dst_fall_back_0130_pst_second", "2023-11-05T01:30:00-08:00"),
        ("dst_spring_forward_0330_pdt", "2024-03-10T03:30:00-07:00"),
    ],
    "hsl-helsinki-2022-cropped.zip": [("day_before_only_service_day", "2022-02-21T12:00:00+02:00")],
    "sound-transit-link-2023.zip": [("after_calendar_end", "2023-07-31T08:00:00-07:00")],
}
