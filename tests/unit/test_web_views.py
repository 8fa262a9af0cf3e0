"""web/mapview.py, web/links.py, web/timeline.py and the _map.html macro: the console's pure views."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import jinja2

from web.links import LinkKey, link_groups, link_keys, links_for
from web.mapview import MapPoint, map_view, mercator
from web.timeline import TimelineItem, bars, timeline

TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"


def _p(rid: str, lat: float | None, lon: float | None) -> MapPoint:
    return MapPoint(rid, lat, lon, f"title {rid}", "sighting")


def test_projection_is_monotonic() -> None:
    lats = [-80, -45, -1, 0, 1, 45, 51.5, 80]
    ys = [mercator(lat, 0)[1] for lat in lats]
    assert ys == sorted(ys, reverse=True)  # north is up
    xs = [mercator(0, lon)[0] for lon in (-179, -1, 0, 1, 179)]
    assert xs == sorted(xs)


def test_the_view_fits_the_points_and_clusters_only_near_ones() -> None:
    view = map_view(
        [
            _p("a", 51.5, -0.1),
            _p("b", 51.50001, -0.10001),
            _p("c", 53.48, -2.24),
            _p("d", None, None),
        ]
    )
    assert (view.placed, view.unplaced) == (3, 1)
    by_count = sorted(view.clusters, key=lambda c: c.count)
    assert [c.count for c in by_count] == [1, 2]
    assert by_count[1].record_ids == ("a", "b")
    assert by_count[0].record_ids == ("c",)
    for c in view.clusters:
        assert 0 <= c.x <= view.width
        assert 0 <= c.y <= view.height
    # Manchester is north-west of London: up and left.
    assert by_count[0].y < by_count[1].y
    assert by_count[0].x < by_count[1].x
    assert view.tiles == ()
    assert any(g.horizontal and g.label.endswith("N") for g in view.grid)
    assert any(not g.horizontal and g.label.endswith("W") for g in view.grid)


def test_far_points_stay_apart_and_single_or_no_points_get_a_sane_extent() -> None:
    view = map_view([_p(str(i), 51 + i * 0.5, -1 + i * 0.5) for i in range(4)])
    assert sorted(c.count for c in view.clusters) == [1, 1, 1, 1]
    one = map_view([_p("a", 51.5, -0.1)], max_zoom=17)
    assert one.zoom <= 17  # street level, not infinite
    assert one.zoom > 10
    assert one.clusters[0].x == one.width / 2
    none = map_view([_p("x", None, None), _p("y", 95.0, 0.0)])
    assert (none.placed, none.unplaced, none.clusters) == (0, 2, ())
    south, _, north, _ = none.bounds
    assert south < 50  # the whole UK
    assert north > 58


def test_tiles_only_when_configured_and_they_cover_the_view() -> None:
    points = [_p("a", 51.5, -0.1), _p("b", 51.6, 0.0)]
    view = map_view(points, tile_url="https://tiles.example/{z}/{x}/{y}.png", max_zoom=12)
    assert view.tiles
    z = {
        re.match(r"https://tiles\.example/(\d+)/\d+/\d+\.png$", t.url).group(1) for t in view.tiles
    }  # type: ignore[union-attr]
    assert z == {str(min(12, int(view.zoom)))}
    assert min(t.x for t in view.tiles) <= 0
    assert min(t.y for t in view.tiles) <= 0
    assert max(t.x + t.size for t in view.tiles) >= view.width
    assert max(t.y + t.size for t in view.tiles) >= view.height
    assert map_view(points).tiles == ()


def test_the_map_macro_renders_svg_without_inline_styles() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    points = [MapPoint("a", 51.5, -0.1, "<script>x</script>", "sighting"), _p("b", 53.4, -2.2)]
    points.append(MapPoint("c", 53.40001, -2.20001, "c", "sighting"))
    html = env.from_string(
        '{% from "_map.html" import map_svg %}{{ map_svg(v, "Sightings") }}'
    ).render(v=map_view([*points, _p("u", None, None)], tile_url="https://t/{z}/{x}/{y}.png"))
    assert 'role="img"' in html
    assert 'aria-label="Sightings: 3 placed, 1 without a position"' in html
    assert "style=" not in html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert '<a href="/records/a">' in html
    assert 'class="point"' in html
    assert 'class="cluster"' in html
    assert 'data-record-ids="b c"' in html
    assert re.search(r'<text class="cluster-count"[^>]*>2</text>', html)
    assert html.count("<image") >= 1


def _sighting(
    reg: object = None, person: object = None, site: object = "Shul", area: object = "KENT"
) -> dict[str, object]:
    return {
        "vehicles": [{"registration": reg}] if reg is not None else [],
        "persons": [{"summary": person}] if person is not None else [],
        "place": {"site_name": site, "force_area": area},
    }


def test_link_keys_normalise_and_never_link_on_redacted_or_empty() -> None:
    keys = link_keys(_sighting("ab12 cde", "  Tall   MAN ", "High St Shul", "KENT"))
    assert LinkKey("vehicle", "AB12CDE", "AB12CDE") in keys
    assert any(k.kind == "person" and k.key == "tall man" for k in keys)
    assert any(k.kind == "site" and k.key == "high st shul|KENT" for k in keys)
    assert link_keys(_sighting("[REDACTED]", "[REDACTED]", "[REDACTED]")) == frozenset()
    assert link_keys(_sighting("  ", "", None)) == frozenset()
    assert (
        link_keys({"vehicles": "[REDACTED]", "persons": "[REDACTED]", "place": "[REDACTED]"})
        == frozenset()
    )
    correction = {"replacement": _sighting("XY1")}
    assert {k.key for k in link_keys(correction)} == {"XY1", "shul|KENT"}


def test_link_groups_need_two_distinct_records_and_sort_by_size() -> None:
    views = [
        ("r1", _sighting("AB12CDE", site="Shul", area="KENT")),
        ("r2", _sighting("ab12cde", site="shul", area="KENT")),
        ("r3", _sighting("AB-12 CDE", site="Shul", area="SURREY")),
        ("r4", _sighting("[REDACTED]", site="[REDACTED]")),
        ("r5", _sighting("[REDACTED]", site="[REDACTED]")),
        ("r1", _sighting("ONLYONE")),  # a record seen twice is still one record
    ]
    groups = link_groups(views)
    assert [(g.key.kind, g.record_ids) for g in groups] == [
        ("vehicle", ("r1", "r2", "r3")),
        ("site", ("r1", "r2")),
    ]
    assert [g.key.kind for g in links_for("r3", views)] == ["vehicle"]
    assert links_for("r4", views) == []


def _item(rid: str, kind: str, when: datetime) -> TimelineItem:
    return TimelineItem(rid, kind, when, rid)


def test_timeline_groups_by_utc_day_newest_first() -> None:
    items = [
        _item("a", "sighting", datetime(2026, 3, 1, 9, tzinfo=UTC)),
        _item("b", "incident", datetime(2026, 3, 1, 18, tzinfo=UTC)),
        _item("c", "sighting", datetime(2026, 2, 27, 23, 30, tzinfo=UTC)),
        _item("d", "sighting", datetime.fromisoformat("2026-02-28T00:30:00+02:00")),  # 27th UTC
        _item("e", "sighting", datetime(2026, 3, 1, 12, tzinfo=UTC)),
    ]
    days = timeline(items)
    assert [d.date for d in days] == [date(2026, 3, 1), date(2026, 2, 27)]
    assert [i.record_id for i in days[0].items] == ["b", "e", "a"]
    assert dict(days[0].counts) == {"incident": 1, "sighting": 2}
    assert days[1].total == 2
    assert timeline([]) == []


def test_bars_are_relative_to_the_busiest_day_oldest_first() -> None:
    items = [_item(str(i), "sighting", datetime(2026, 3, 1, i, tzinfo=UTC)) for i in range(4)]
    items.append(_item("x", "incident", datetime(2026, 2, 1, tzinfo=UTC)))
    result = bars(timeline(items), 40)
    assert [(b.date, b.height, b.count) for b in result] == [
        (date(2026, 2, 1), 10.0, 1),
        (date(2026, 3, 1), 40.0, 4),
    ]
    assert bars([], 40) == []
