"""City benchmarks: named, reproducible from their seed, route seeds distinct and stable."""

from __future__ import annotations

import pytest

from sd_evaluator.city.benchmarks import BENCHMARKS, BenchmarkError, CityBenchmark, city_benchmark, is_city_benchmark


def test_named_benchmarks():
    city20 = city_benchmark("city-20")
    assert (city20.city, city20.routes, city20.step_ticks, city20.agent_hz) == ("east-village", 20, 3, 20.0)
    smoke = city_benchmark("city-smoke")
    assert smoke.routes == 1 and smoke.route_max_m <= 200
    assert is_city_benchmark("city-20") and not is_city_benchmark("bench2drive220")
    with pytest.raises(BenchmarkError, match="unknown city benchmark 'city-3'; known: city-20, city-6, city-smoke"):
        city_benchmark("city-3")


def test_city_6_drives_the_first_six_routes_of_city_20():
    city6, city20 = city_benchmark("city-6"), city_benchmark("city-20")
    assert city6.routes == 6
    assert [city6.reset_options(i) for i in range(6)] == [city20.reset_options(i) for i in range(6)]
    assert [city6.route_id(i) for i in range(6)] == [city20.route_id(i) for i in range(6)]
    assert (city6.city, city6.step_ticks, city6.render_width, city6.render_height) == (
        city20.city, city20.step_ticks, city20.render_width, city20.render_height)


def test_routes_are_reproducible_from_the_seed():
    b = BENCHMARKS["city-20"]
    seeds = [b.route_seed(i) for i in range(b.routes)]
    # The same fields give the same seeds, in another object and another order of asking.
    again = CityBenchmark("other-name", b.city, b.seed, b.routes, b.route_min_m, b.route_max_m, b.cars, b.pedestrians)
    assert [again.route_seed(i) for i in reversed(range(b.routes))] == seeds[::-1]
    assert len(set(seeds)) == b.routes
    assert all(0 <= s < 2**31 - 1 for s in seeds)
    # Pinned: a change of the derivation would silently change every benchmark's routes.
    assert seeds[0] == CityBenchmark("x", "c", 20261201, 1, 1, 2, 0, 0).route_seed(0) == 389823687
    other = CityBenchmark("x", b.city, b.seed + 1, b.routes, b.route_min_m, b.route_max_m, b.cars, b.pedestrians)
    assert other.route_seed(0) != seeds[0]
    opts = b.reset_options(3)
    assert opts == {"seed": seeds[3], "route_min_m": 300, "route_max_m": 600, "cars": 40, "peds": 40}
    assert b.route_id(3) == "RouteScenario_3_rep0"
    with pytest.raises(BenchmarkError, match=r"route index 20 is not in \[0, 20\)"):
        b.route_seed(20)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"routes": 0}, "at least one route"),
        ({"route_min_m": 200, "route_max_m": 100}, "0 < min <= max"),
        ({"step_ticks": 0}, "step_ticks"),
        ({"cars": -1}, "cannot be negative"),
    ],
)
def test_bad_benchmarks_are_named(kw, message):
    fields = dict(name="bad", city="east-village", seed=1, routes=2, route_min_m=100, route_max_m=200, cars=1,
                  pedestrians=1)
    fields.update(kw)
    with pytest.raises(BenchmarkError, match=message):
        CityBenchmark(**fields)
