"""The HTTP edge: the aiohttp app, routing, handlers, parameters, rendering, the board cache."""
