"""Sticky canary routing: vmtest's route() and the flag file it writes send the same keys to
the target store, as the real OpenFeature flagd provider evaluates that file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from scipy.stats import binom

from vmtest.errors import ConfigError, MissingDriverError
from vmtest.live import routing
from vmtest.live.routing import (
    RESOLUTION,
    bucket,
    bucketing_bytes,
    flagd_definition,
    route,
    write_flagd_file,
)

N = 10_000


def make_keys(n: int = N) -> list[str]:
    """Keys of every CBOR length class: short (< 24 bytes), longer than 23 and than 255
    bytes, and non-ASCII ones (UTF-8 is what flagd hashes)."""
    keys = []
    for i in range(n):
        if i % 100 == 7:
            keys.append(f"{'tenant-' * 40}{i}")            # > 255 bytes
        elif i % 10 == 3:
            keys.append(f"tenant-{i % 7}/document/{i:08d}-ü")  # 24..255 bytes
        elif i % 10 == 5:
            keys.append(f"usér-{i}")
        else:
            keys.append(f"user-{i}")
    return keys


KEYS = make_keys()


@pytest.fixture
def flagd_client(tmp_path):
    """An OpenFeature client whose provider is the real flagd provider, in-process, reading
    the flag file in FILE mode (polled every 20 ms), as an application would set it up."""
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    path = write_flagd_file(tmp_path / "flags.json", 5)
    provider = FlagdProvider(resolver_type=ResolverType.FILE,
                             offline_flag_source_path=str(path), deadline_ms=20)
    domain = f"vmtest-{tmp_path.name}"
    api.set_provider_and_wait(provider, domain=domain)
    try:
        yield path, api.get_client(domain=domain)
    finally:
        api.clear_providers()


def variants(client, keys, flag_key: str = routing.FLAG_KEY) -> list[str | None]:
    from openfeature.evaluation_context import EvaluationContext

    out = []
    for key in keys:
        details = client.get_string_details(flag_key, "unset", EvaluationContext(
            targeting_key=key))
        assert details.error_code is None, (key, details)
        out.append(details.variant)
    return out


def wait_for_split(client, percent: float, previous: float) -> None:
    """Wait until the provider has read the file rewritten from ``previous`` to ``percent``:
    a key routed differently at the two percentages shows which split it holds."""
    probe = next(k for k in KEYS if route(k, percent) != route(k, previous))
    want = "target" if route(probe, percent) else "source"
    deadline = time.monotonic() + 10
    while variants(client, [probe])[0] != want:
        assert time.monotonic() < deadline, f"the provider never read the {percent}% file"
        time.sleep(0.01)


def disagreements(client, keys, percent: float) -> list[tuple[str, str | None, bool]]:
    got = variants(client, keys)
    return [(key, variant, route(key, percent)) for key, variant in zip(keys, got, strict=True)
            if variant != ("target" if route(key, percent) else "source")]


def test_the_flagd_provider_reading_the_file_routes_every_key_as_route_does(flagd_client):
    """10,000 keys at 5%, then the file rewritten to 37% under the running provider (which
    reloads it): the variant flagd gives each key is route()'s answer, key by key."""
    path, client = flagd_client
    start = time.perf_counter()
    assert disagreements(client, KEYS, 5) == []
    took = time.perf_counter() - start
    assert took < 10, f"10,000 evaluations through the provider took {took:.1f} s"
    routed = sum(route(k, 5) for k in KEYS)
    assert 400 < routed < 600  # the split is real: neither side is empty

    write_flagd_file(path, 37)
    wait_for_split(client, 37, previous=5)
    assert disagreements(client, KEYS, 37) == []


def test_the_provider_agrees_at_the_edges_and_between_whole_percents(flagd_client):
    """0% (a weight of 0 for the target) sends every key to the source, 100% every key to the
    target; 12.34% (basis points) agrees too; a missing targeting key gets the source."""
    path, client = flagd_client
    keys = KEYS[:2000]
    previous = 5.0
    for percent in (0, 100, 12.34):
        write_flagd_file(path, percent)
        wait_for_split(client, percent, previous)
        assert disagreements(client, keys, percent) == [], percent
        previous = percent
    write_flagd_file(path, 100)
    wait_for_split(client, 100, previous)
    assert set(variants(client, keys)) == {"target"}
    assert variants(client, [""]) == ["source"] and route("", 100) is False


def test_bucket_is_flagd_cores_fractional_for_any_flag_key():
    """flagd-core's own fractional operator, called as its targeting engine calls it, picks
    the variant bucket() predicts, for another flag key (the seed) and odd weights."""
    from openfeature.contrib.tools.flagd.core.targeting.custom_ops import fractional

    flag_key = "checkout-search"
    for weight in (1, 777, 5000, 9999):
        for key in KEYS[::5]:
            data = {"$flagd": {"flagKey": flag_key}, "targetingKey": key}
            got = fractional(data, ["target", weight], ["source", RESOLUTION - weight])
            want = "target" if bucket(key, flag_key) < weight else "source"
            assert got == want, (key, weight, bucket(key, flag_key))


@pytest.mark.parametrize("length", [0, 1, 23, 24, 255, 256, 65_535, 65_536])
def test_the_hashed_bytes_are_canonical_cbor(length):
    import cbor2

    for key in ("k" * length, ("é" * length)[:length]):
        assert bucketing_bytes(key, "flag") == cbor2.dumps(["flag", key], canonical=True)


def test_routing_is_sticky_and_monotone():
    at = {p: {k for k in KEYS if route(k, p)} for p in (0, 5, 10, 50, 100)}
    assert at[0] == set()
    assert at[5] <= at[10] <= at[50] <= at[100] == set(KEYS)
    low, high = binom.interval(0.999, N, 0.05)
    assert low <= len(at[5]) <= high, (len(at[5]), low, high)
    low, high = binom.interval(0.999, N, 0.5)
    assert low <= len(at[50]) <= high, (len(at[50]), low, high)
    # the same call gives the same answer; another flag key draws another 5%
    assert {k for k in KEYS if route(k, 5)} == at[5]
    other = {k for k in KEYS if route(k, 5, flag_key="another-cutover")}
    assert len(other & at[5]) < len(at[5]) / 2


def test_buckets_cover_the_resolution_evenly():
    buckets = [bucket(k) for k in KEYS]
    assert min(buckets) >= 0 and max(buckets) < RESOLUTION
    tenth = sum(b < RESOLUTION // 10 for b in buckets)
    low, high = binom.interval(0.999, N, 0.1)
    assert low <= tenth <= high


def test_the_definition_writes_both_weights_out_of_the_resolution():
    flags = flagd_definition(0, on="qdrant", off="chroma")
    assert flags["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    flag = flags["flags"]["vmtest-cutover"]
    assert flag["variants"] == {"source": "chroma", "target": "qdrant"}
    assert flag["defaultVariant"] == "source"
    assert flag["targeting"]["fractional"] == [["target", 0], ["source", RESOLUTION]]
    full = flagd_definition(100)["flags"]["vmtest-cutover"]["targeting"]["fractional"]
    assert full == [["target", RESOLUTION], ["source", 0]]
    part = flagd_definition(37.5)["flags"]["vmtest-cutover"]["targeting"]["fractional"]
    assert part == [["target", 3750], ["source", 6250]]


@pytest.mark.parametrize("percent", [-1, 100.5, float("nan"), float("inf"), True, "5"])
def test_a_percentage_outside_0_to_100_is_refused(percent):
    with pytest.raises(ConfigError, match="from 0 to 100"):
        route("user-1", percent)
    with pytest.raises(ConfigError, match="from 0 to 100"):
        flagd_definition(percent)


def test_the_file_is_replaced_whole_under_a_reader(tmp_path):
    """A reader polling the file while it is rewritten 30 times always parses a whole
    definition (a plain open-and-write shows it empty or half written hundreds of times in
    30 writes, measured); no temporary
    file is left; an existing file's permissions are kept."""
    path = write_flagd_file(tmp_path / "flags.json", 0)
    os.chmod(path, 0o640)
    seen: set[int] = set()
    errors: list[str] = []
    done, reading = threading.Event(), threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                text = path.read_text()
                fractional = json.loads(text)["flags"]["vmtest-cutover"]["targeting"][
                    "fractional"]
                seen.add(fractional[0][1])
            except Exception as exc:  # pragma: no cover - what the test must never see
                errors.append(f"{type(exc).__name__}: {exc}")
            reading.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert reading.wait(10)
        for i in range(30):
            write_flagd_file(path, i)
    finally:
        done.set()
        reader.join()
    assert errors == []
    assert len(seen) > 1  # the reader did see the file change under it
    assert [p.name for p in tmp_path.iterdir()] == ["flags.json"]
    assert path.stat().st_mode & 0o777 == 0o640
    assert json.loads(path.read_text())["flags"]["vmtest-cutover"]["targeting"][
        "fractional"][0] == ["target", 2900]


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        write_flagd_file(tmp_path / "nope" / "flags.json", 5)


def test_without_mmh3_routing_says_what_to_install(monkeypatch):
    monkeypatch.setattr(routing, "_mmh3", None)
    monkeypatch.setitem(sys.modules, "mmh3", None)
    with pytest.raises(MissingDriverError, match=r"pip install 'vmtest\[live\]'") as info:
        route("user-1", 5)
    assert "'mmh3'" in str(info.value) and "sticky routing" in str(info.value)


def test_the_plugin_and_the_live_modules_import_no_live_package():
    """pytest loads vmtest.plugin in every run: it must not pull the live extra in; and the
    live modules import their packages only when used."""
    code = ("import sys, vmtest.plugin, vmtest.live.routing, vmtest.live.experiment; "
            "print(sorted(m for m in ('mmh3', 'prometheus_client', 'openfeature') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
