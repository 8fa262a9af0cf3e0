"""An offline map of sightings: points projected into an SVG's pixel space, nothing fetched.

The console runs where the internet may be out of reach (and a tile server would learn where
reports are), so the map stands without tiles: Web Mercator (the projection every tile server
uses, so tiles line up when configured), fitted to the points, near points clustered so a busy
site stays readable, and a graticule with labelled round latitudes and longitudes so it reads as
a map. Tiles are listed only when the operator configures a ``tile_url`` template.

Pure: no I/O; ``web/templates/_map.html`` renders a :class:`MapView` as inline SVG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

#: Points nearer than this many pixels are drawn as one cluster.
CLUSTER_PX = 24.0
#: Tiles are 256 px squares at every zoom (the slippy-map convention).
TILE_PX = 256
_PADDING = 0.1  # of the view on each side, so an edge point is not cut by the frame
_DEFAULT_SPAN = 0.02  # degrees around a single point: a few streets
_UK = (49.9, -8.2, 58.7, 1.8)  # south, west, north, east: the view with no point at all
_MAX_LAT = 85.05112878  # Web Mercator's limit
_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 45, 90)


@dataclass(frozen=True, slots=True)
class MapPoint:
    """A record to place: where (None when it gave no position) and what to call it."""

    record_id: str
    lat: float | None
    lon: float | None
    title: str
    kind: str
    when: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cluster:
    """One drawn mark: its pixel centre, how many records, which, and a title for its tooltip."""

    x: float
    y: float
    count: int
    record_ids: tuple[str, ...]
    title: str


@dataclass(frozen=True, slots=True)
class GridLine:
    """A graticule line (a latitude is horizontal, a longitude vertical) at pixel ``at``."""

    horizontal: bool
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Tile:
    """A tile image to draw at (x, y) with side ``size`` px."""

    x: float
    y: float
    size: float
    url: str


@dataclass(frozen=True, slots=True)
class MapView:
    """Everything the SVG needs, in pixels of a ``width`` x ``height`` view."""

    width: int
    height: int
    zoom: float
    clusters: tuple[Cluster, ...]
    grid: tuple[GridLine, ...]
    tiles: tuple[Tile, ...]
    placed: int
    unplaced: int
    bounds: tuple[float, float, float, float]  # south, west, north, east shown


def mercator(lat: float, lon: float) -> tuple[float, float]:
    """World coordinates in [0, 1) x [0, 1): x east from 180 W, y south from the top."""
    lat = max(-_MAX_LAT, min(_MAX_LAT, lat))
    s = math.sin(math.radians(lat))
    return (lon + 180.0) / 360.0, 0.5 - math.log((1 + s) / (1 - s)) / (4 * math.pi)


def _lat_of(y: float) -> float:
    return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y))))


def map_view(
    points: Iterable[MapPoint],
    *,
    width: int = 800,
    height: int = 500,
    tile_url: str | None = None,
    max_zoom: int = 17,
) -> MapView:
    """The map of ``points``: fitted to their bounds with padding, clustered, with a graticule,
    and the tiles covering it when ``tile_url`` ("https://.../{z}/{x}/{y}.png") is given."""
    all_points = list(points)
    placed = [
        p
        for p in all_points
        if p.lat is not None
        and p.lon is not None
        and math.isfinite(p.lat)
        and math.isfinite(p.lon)
        and -90 <= p.lat <= 90
        and -180 <= p.lon <= 180
    ]
    south, west, north, east = _extent(placed)
    x0, y1 = mercator(south, west)
    x1, y0 = mercator(north, east)
    # Pixels per world unit: the largest scale that fits both spans, capped at max_zoom.
    span_x = max(x1 - x0, 1e-12) * (1 + 2 * _PADDING)
    span_y = max(y1 - y0, 1e-12) * (1 + 2 * _PADDING)
    scale = min(width / span_x, height / span_y, TILE_PX * 2.0**max_zoom)
    zoom = math.log2(scale / TILE_PX)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = cx - width / 2 / scale, cy - height / 2 / scale

    def px(lat: float, lon: float) -> tuple[float, float]:
        wx, wy = mercator(lat, lon)
        return (wx - left) * scale, (wy - top) * scale

    shown = (
        _lat_of(top + height / scale),
        left * 360 - 180,
        _lat_of(top),
        (left + width / scale) * 360 - 180,
    )
    clusters = _cluster([(px(lat, lon), p) for p, lat, lon in _coordinates(placed)])
    return MapView(
        width,
        height,
        zoom,
        clusters,
        _graticule(shown, px, width, height),
        _tiles(
            tile_url,
            left=left,
            top=top,
            scale=scale,
            width=width,
            height=height,
            max_zoom=max_zoom,
        )
        if tile_url
        else (),
        len(placed),
        len(all_points) - len(placed),
        shown,
    )


def _coordinates(placed: Sequence[MapPoint]) -> list[tuple[MapPoint, float, float]]:
    return [(p, p.lat, p.lon) for p in placed if p.lat is not None and p.lon is not None]


def _extent(placed: Sequence[MapPoint]) -> tuple[float, float, float, float]:
    if not placed:
        return _UK
    lats = [p.lat for p in placed if p.lat is not None]
    lons = [p.lon for p in placed if p.lon is not None]
    south, north, west, east = min(lats), max(lats), min(lons), max(lons)
    if north - south < _DEFAULT_SPAN and east - west < _DEFAULT_SPAN:
        # One point (or several at one site): a street-level view around it, not infinite zoom.
        mid_lat, mid_lon = (south + north) / 2, (west + east) / 2
        half = _DEFAULT_SPAN / 2
        return mid_lat - half, mid_lon - half, mid_lat + half, mid_lon + half
    return south, west, north, east


def _cluster(placed: list[tuple[tuple[float, float], MapPoint]]) -> tuple[Cluster, ...]:
    # Greedy, in a stable order: each point joins the first cluster whose centre is within
    # CLUSTER_PX, which then moves to the mean of its members. Enough for hundreds of points.
    groups: list[tuple[list[float], list[MapPoint]]] = []
    for (x, y), point in sorted(placed, key=lambda item: item[1].record_id):
        for centre, members in groups:
            if math.hypot(centre[0] - x, centre[1] - y) < CLUSTER_PX:
                members.append(point)
                n = len(members)
                centre[0] += (x - centre[0]) / n
                centre[1] += (y - centre[1]) / n
                break
        else:
            groups.append(([x, y], [point]))
    out = []
    for centre, members in groups:
        title = members[0].title if len(members) == 1 else f"{len(members)} records"
        out.append(
            Cluster(
                round(centre[0], 1),
                round(centre[1], 1),
                len(members),
                tuple(m.record_id for m in members),
                title,
            )
        )
    return tuple(out)


def _step(span: float) -> float:
    # The round step giving about four to eight lines across the view.
    return next((s for s in _STEPS if span / s <= 8), _STEPS[-1])


def _graticule(
    shown: tuple[float, float, float, float],
    px: Callable[[float, float], tuple[float, float]],
    width: int,
    height: int,
) -> tuple[GridLine, ...]:
    south, west, north, east = shown
    lines: list[GridLine] = []
    lat_step, lon_step = _step(north - south), _step(east - west)
    first = math.ceil(south / lat_step)
    for i in range(first, math.floor(north / lat_step) + 1):
        lat = i * lat_step
        _, y = px(lat, west)
        if 0 <= y <= height:
            lines.append(GridLine(True, round(y, 1), _degrees(lat, lat_step, "N", "S")))
    first = math.ceil(west / lon_step)
    for i in range(first, math.floor(east / lon_step) + 1):
        lon = i * lon_step
        x, _ = px(south, lon)
        if 0 <= x <= width:
            lines.append(GridLine(False, round(x, 1), _degrees(lon, lon_step, "E", "W")))
    return tuple(lines)


def _degrees(value: float, step: float, positive: str, negative: str) -> str:
    places = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    hemisphere = positive if value > 0 else negative if value < 0 else ""
    return f"{abs(value):.{places}f}°{hemisphere}"


def _tiles(
    template: str,
    *,
    left: float,
    top: float,
    scale: float,
    width: int,
    height: int,
    max_zoom: int,
) -> tuple[Tile, ...]:
    # The integer zoom at or below the view's, so tiles are drawn at most 2x enlarged.
    z = max(0, min(max_zoom, math.floor(math.log2(scale / TILE_PX))))
    n = 2**z
    size = scale / n  # pixels per tile at the view's scale
    out = []
    for ty in range(max(0, math.floor(top * n)), min(n, math.ceil((top + height / scale) * n))):
        for tx in range(math.floor(left * n), math.ceil((left + width / scale) * n)):
            url = template.format(z=z, x=tx % n, y=ty)
            out.append(
                Tile(
                    round((tx / n - left) * scale, 2),
                    round((ty / n - top) * scale, 2),
                    round(size, 2),
                    url,
                )
            )
    return tuple(out)
