"""The web view in a real headless Chromium, against `graphbuild serve` on the bundled
example's workspace after a real sweep (tests/example.py): what the browser shows is
what the CLI's `--json` says, and repository content is text, never markup.

A screenshot of each page is written to test-output/web/ (tests/browser.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from graphbuild.state import NodeStatus, RunNode, State

from .browser import chromium, serving, shot
from .example import graphbuild
from .site import require


@pytest.fixture(scope="module")
def site(example_workspace, tmp_path_factory):
    """(the example's folder, its registry host, serve's base URL, a browser); the
    example's workspace is the session's (tests/conftest.py)."""
    require("chromium")
    require("chromedriver")
    root, host = example_workspace
    with serving(root) as url, chromium(tmp_path_factory.mktemp("profile")) as driver:
        yield root, host, url, driver


def cli_json(root: Path, *args: str):
    done = graphbuild(root, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cells(driver, selector: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in driver.find_elements(By.CSS_SELECTOR, selector)]  # fmt: skip


@pytest.mark.timeout(600)
def test_the_search_shows_exactly_the_rows_of_uses_json(site):
    """Typed into the search box and submitted, as a person does: one row per image of
    `uses REF --json`, in its order, with its depth, base, kind and repo:file:line; the
    workloads that run them below."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    root, host, url, driver = site
    searches = {"search-base": f"{host}/upstream/os", "search-image": f"{host}/platform/runtime:1"}
    for name, ref in searches.items():
        driver.get(url + "/")
        box = driver.find_element(By.NAME, "ref")
        box.clear()
        box.send_keys(ref)
        box.submit()
        WebDriverWait(driver, 30).until(expected_conditions.url_contains("ref="))
        expected = cli_json(root, "uses", ref)
        assert expected, ref  # the example builds on both
        assert cells(driver, "#uses tbody tr") == [
            [str(u["depth"]), u["image"], u["base"], u["kind"],
             f"{u['repo']}:{u['dockerfile']}:{u['line']}"] for u in expected
        ]  # fmt: skip
        running = sorted((w["ring"], w["name"], u["image"], w["where"])
                         for u in expected for w in u["workloads"])  # fmt: skip
        assert [tuple(row) for row in cells(driver, "#workloads tbody tr")] == running
        shot(driver, name)
    driver.get(url + "/?" + urlencode({"ref": "upstream/os"}))  # no registry: suggested
    near = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#near a")]
    assert f"{host}/upstream/os:1" in near


@pytest.mark.timeout(600)
def test_the_run_timeline_has_one_bar_per_build_in_wave_order(site):
    from selenium.webdriver.common.by import By

    root, _, url, driver = site
    run = cli_json(root, "runs")[0]
    document = cli_json(root, "runs", run["id"])
    driver.get(f"{url}/runs/{quote(run['id'])}")
    bars = driver.find_elements(By.CSS_SELECTOR, "svg g.bar")
    built = sorted((n for n in document["nodes"] if n["started"] and n["finished"]),
                   key=lambda n: (n["wave"], n["started"], n["node"]))  # fmt: skip
    assert len(built) >= 5  # the example's whole fleet was built
    assert [b.get_attribute("data-node") for b in bars] == [n["node"] for n in built]
    waves = [int(b.get_attribute("data-wave")) for b in bars]
    assert waves == sorted(waves) and waves[0] == 0 and waves[-1] > 0
    # drawn, left to right in time: a bar starts no earlier than the one of a lower wave
    # that it was built on; every bar has a width on the screen
    rects = [b.find_element(By.TAG_NAME, "rect") for b in bars]
    assert all(r.rect["width"] > 0 and r.rect["height"] > 0 for r in rects)
    starts = {b.get_attribute("data-node"): r.rect["x"] for b, r in zip(bars, rects, strict=True)}
    ends = {n: starts[n] + r.rect["width"] for n, r in zip(starts, rects, strict=True)}
    for node in built:
        for parent in node["chain"][1:2]:  # what made it rebuild, one level up
            if parent in starts:
                assert starts[node["node"]] >= ends[parent] - 1, (node["node"], parent)
    logs = driver.find_elements(By.CSS_SELECTOR, "table a[href*='/logs/']")
    assert len(logs) == len(built)
    shot(driver, "run")
    logs[0].click()
    assert driver.find_element(By.TAG_NAME, "body").text.strip()  # the build's own output


@pytest.mark.timeout(600)
def test_the_image_bases_and_runs_pages_show_what_the_cli_says(site):
    from selenium.webdriver.common.by import By

    root, host, url, driver = site
    ref = f"{host}/platform/runtime:1"
    (image,) = cli_json(root, "show", ref)
    driver.get(url + "/image?" + urlencode({"ref": ref}))
    assert driver.find_element(By.TAG_NAME, "h1").text == image["id"]
    assert [r[1] for r in cells(driver, "#parents tbody tr")] == [p["base"] for p in
                                                                  image["parents"]]  # fmt: skip
    assert [r[0] for r in cells(driver, "#children tbody tr")] == [c["image"] for c in
                                                                   image["children"]]  # fmt: skip
    assert image["freshness"]["status"] == "up-to-date"  # the sweep built it
    assert "up-to-date" in driver.find_element(By.CSS_SELECTOR, "section.image").text
    shot(driver, "image")
    bases = cli_json(root, "bases")
    driver.get(url + "/bases")
    assert [r[0] for r in cells(driver, "#bases tbody tr")] == [b["id"] for b in bases]
    shot(driver, "bases")
    runs = cli_json(root, "runs")
    driver.get(url + "/runs")
    assert [r[0] for r in cells(driver, "#runs tbody tr")] == [r["id"] for r in runs]
    shot(driver, "runs")


HOSTILE = '<img src=x onerror="window.pwned=1">"><script>window.pwned=2</script>'


@pytest.mark.timeout(600)
def test_html_in_a_path_a_reason_or_a_log_name_is_text_in_the_browser(tmp_path):
    """A Dockerfile folder, a run's reason, a build's error and its log's name that hold
    HTML and script show as those characters: nothing runs, nothing is fetched, and the
    browser's console reports no policy violation (so nothing even tried)."""
    from selenium.webdriver.common.by import By

    require("chromium")
    require("chromedriver")
    folder = "x" + HOSTILE.replace("/", "|")  # a folder name cannot hold /
    app = tmp_path / "app" / folder
    app.mkdir(parents=True)
    (app / "Dockerfile").write_text("FROM 127.0.0.1:9/upstream/os:1\n")
    dockerfile = json.dumps(folder + "/Dockerfile")
    (tmp_path / "repos.yaml").write_text(
        "repos:\n  - name: app\n    path: app\n"
        f"    images: [{{image: 127.0.0.1:9/app, dockerfile: {dockerfile}}}]\n"
    )
    assert graphbuild(tmp_path, "sync").returncode == 0
    image = "127.0.0.1:9/app:latest"
    with State(tmp_path / ".graphbuild") as state:
        run = state.create_run("rebuild", HOSTILE, {}, [RunNode(image, 0, "forced", HOSTILE, [])])
        log = tmp_path / ".graphbuild" / "runs" / run / f"{HOSTILE.replace('/', '|')}.log"
        log.parent.mkdir(parents=True)
        log.write_text(HOSTILE)
        state.update_node(run, RunNode(image, 0, "forced", HOSTILE, [], NodeStatus.FAILED, 1,
                                       "2026-12-06T10:00:00+00:00", "2026-12-06T10:00:05+00:00",
                                       None, str(log), None, HOSTILE))  # fmt: skip
    with serving(tmp_path) as url, chromium(tmp_path / "profile") as driver:
        pages = {
            "xss-search": "/?" + urlencode({"ref": "127.0.0.1:9/upstream/os:1"}),
            "xss-image": "/image?" + urlencode({"ref": image}),
            "xss-run": f"/runs/{run}",
            "xss-runs": "/runs",
            "xss-query": "/?" + urlencode({"ref": HOSTILE}),
        }
        for name, path in pages.items():
            driver.get(url + path)
            body = driver.find_element(By.TAG_NAME, "body")
            assert driver.execute_script("return window.pwned === undefined"), name
            assert not driver.find_elements(By.CSS_SELECTOR, "body img, body script"), name
            shown = body.text
            assert HOSTILE in shown or folder in shown or "|script>" in shown, name
            violations = [e for e in driver.get_log("browser") if "Content Security" in
                          e["message"] or "Refused" in e["message"]]  # fmt: skip
            assert violations == [], (name, violations)
            shot(driver, name)
        driver.get(f"{url}/runs/{run}/logs/{quote(log.name)}")  # text/plain: shown, not run
        assert driver.find_element(By.TAG_NAME, "body").text == HOSTILE
        assert driver.execute_script("return window.pwned === undefined")


@pytest.mark.timeout(600)
def test_the_graph_view_draws_the_nodes_and_edges_of_graph_json(site):
    """Each node and each edge of `graph --focus REF --depth N --format json` is drawn, once,
    and nothing else; nodes carry the last check's word, edges their kind."""
    from selenium.webdriver.common.by import By

    root, host, url, driver = site
    for name, focus, depth in (("graph-base", f"{host}/platform/base:stable", "1"),
                               ("graph-image", f"{host}/platform/runtime:1", "all")):  # fmt: skip
        args = ["graph", "--format", "json", "--focus", focus]
        done = graphbuild(root, *args, *(["--depth", depth] if depth != "all" else []))
        assert done.returncode == 0, done.stderr
        expected = json.loads(done.stdout)
        driver.get(url + "/graph?" + urlencode({"focus": focus, "depth": depth}))
        nodes = driver.find_elements(By.CSS_SELECTOR, "svg#graph g.node")
        edges = driver.find_elements(By.CSS_SELECTOR, "svg#graph g.edge")
        assert sorted(n.get_attribute("data-id") for n in nodes) == sorted(
            n["id"] for n in expected["nodes"]
        )
        assert sorted((e.get_attribute("data-source"), e.get_attribute("data-target"),
                       e.get_attribute("data-kind")) for e in edges) == sorted(
            (e["source"], e["target"], e["kind"]) for e in expected["edges"])  # fmt: skip
        assert all(n.rect["width"] > 0 for n in nodes)  # laid out, on the screen
        shot(driver, name)
    # the sweep built every image: the last check's word on each drawn image is up-to-date
    drawn = driver.find_elements(By.CSS_SELECTOR, "svg#graph g.node.image")
    assert drawn and all("up-to-date" in n.get_attribute("class").split() for n in drawn)
    driver.get(url + "/graph")  # no focus: the whole graph only when asked
    assert not driver.find_elements(By.CSS_SELECTOR, "svg#graph")
    driver.find_element(By.LINK_TEXT, f"draw all {len(cli_json_graph(root))} nodes").click()
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg#graph g.node")) == len(
        cli_json_graph(root)
    )
    shot(driver, "graph-all")


def cli_json_graph(root: Path) -> list:
    done = graphbuild(root, "graph", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["nodes"]
