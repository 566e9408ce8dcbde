"""The playground in a real headless browser: Debian's chromium driven by Playwright's
Python API (never Playwright's own browser builds; .ci/setup-system installs chromium).

Each test fills the form the page built from /openapi.json, runs it against a real server
with real workers, and asserts what the page shows. Screenshots of each are kept in
tests/artifacts/playground/ (git-ignored). Every test also fails on any console error
the page logs (a script error, a request the CSP refused) that it did not expect.
"""

import contextlib
import json
import os
import shutil

import pytest

from cogsdk.conftest import COG_VERSION, ref as cog_ref
from conftest import FIXTURES, HERE, fixture_ref, wait_until
from fixtures.playground_models import png

from .conftest import corral_serve, open_gate, serving

pytest.importorskip("playwright")
httpx = pytest.importorskip("httpx")

ARTIFACTS = os.path.join(HERE, "artifacts", "playground")
MODELS = os.path.join(FIXTURES, "playground_models.py")
TIMEOUT_MS = 30_000


def chromium_path() -> str:
    path = os.environ.get("CORRAL_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium on this machine: run .ci/setup-system (apt-get install "
                    "chromium), or set CORRAL_CHROMIUM to a Chromium binary")
    return path


def _browser_pids() -> set:
    import psutil

    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.name().startswith("chrom"):
                pids.add(p.pid)
        except psutil.Error:
            pass
    return pids


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright):
    """A chromium of the test's own (about half a second to start): its processes, the
    helpers it starts as it likes (network service, GPU, renderers) included, all end
    with it, so no_leftovers holds without waiting on the browser's inner life."""
    b = playwright.chromium.launch(executable_path=chromium_path())
    try:
        yield b
    finally:
        b.close()
        wait_until(lambda: not _browser_pids(), 30, "chromium's processes to exit")


class Tab:
    """A page in a fresh browser context (its own session storage), and the console
    errors it logged."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def shot(self, name: str) -> None:
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tabs(browser):
    """Opens Tabs; closes them, and fails on console errors none of them expected."""
    opened = []

    def open_tab() -> Tab:
        tab = Tab(browser)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.close()
    for tab in opened:
        assert not tab.errors, f"the page logged errors: {tab.errors}"


@pytest.fixture
def servers():
    """``servers(model, **config)`` serves tests/fixtures/playground_models.py:<model>.
    Asked for before ``tabs``, so that the pages close before their servers stop (a page
    polls /health-check, and a refused connection is a console error)."""
    import corral

    with contextlib.ExitStack() as stack:
        def start(name, **config):
            runner = corral.Worker(fixture_ref(f"playground_models:{name}"),
                                   config=config or None)
            return stack.enter_context(serving(runner))

        yield start


@pytest.fixture(scope="module")
def cog_env():
    """The real Cog SDK's environment (as tests/cogsdk's: built once, cached)."""
    pytest.importorskip("uv")
    from corral.plugins.envs import EnvironmentCache

    return EnvironmentCache().ensure([f"cog=={COG_VERSION}"])


@pytest.fixture
def cog_servers(cog_env):
    """``cog_servers("inputs:Predictor", ...)`` serves those tests/cogsdk/predictors/ on
    the real Cog SDK, all started at once; before ``tabs``, as ``servers``."""
    import corral

    with contextlib.ExitStack() as stack:
        def start(*names):
            return [stack.enter_context(serving(corral.Worker(
                cog_ref(name), python=cog_env.python, env=cog_env.worker_env)))
                for name in names]

        yield start


def load(tab: Tab, url: str) -> None:
    tab.page.goto(url)
    tab.page.wait_for_selector("#run:not([disabled])")


def wait_status(tab: Tab, status: str) -> None:
    tab.page.wait_for_selector(f"#status[data-status={status}]")


def field_error(tab: Tab, name: str) -> str:
    return tab.page.locator(f"#err-{name}").inner_text()


def server_problems(base: str, inputs: dict) -> dict:
    """The server's 422 for ``inputs``: {input name: msg}."""
    r = httpx.post(f"{base}/predictions", json={"input": inputs}, timeout=30)
    assert r.status_code == 422, r.text
    return {p["loc"][2]: p["msg"] for p in r.json()["detail"]}


def test_a_text_model_gets_a_form_from_its_schema_and_runs(servers, tabs):
    running = servers("Writer")
    tab = tabs()
    page = tab.page
    load(tab, running.url + "/")
    # one field per input: a text area, a bounded number, a choice, a checkbox
    assert page.locator("#in-prompt").evaluate("n => n.tagName") == "TEXTAREA"
    assert "What to write about" in page.locator("[data-field=prompt]").inner_text()
    repeat = page.locator("#in-repeat")
    assert (repeat.get_attribute("type"), repeat.get_attribute("min"),
            repeat.get_attribute("max"), repeat.input_value()) == ("number", "1", "5", "1")
    assert "Default: 1 · from 1 to 5" in page.locator("[data-field=repeat]").inner_text()
    assert page.locator("#in-style option").all_inner_texts() == ["(default)", "plain",
                                                                   "title", "upper"]
    assert page.locator("#in-exclaim").get_attribute("type") == "checkbox"

    # the required input, left empty: the server's own message, and nothing sent
    page.click("#run")
    assert field_error(tab, "prompt") == server_problems(running.url, {})["prompt"] \
        == "required input is missing"
    assert page.locator("#history-rows tr").count() == 0

    page.fill("#in-prompt", "hello world")
    page.fill("#in-repeat", "2")
    page.select_option("#in-style", label="title")
    page.check("#in-exclaim")
    page.click("#run")
    wait_status(tab, "succeeded")
    assert page.locator("#output").inner_text() == "Hello World! Hello World!"
    assert page.locator("#logs").inner_text().strip() == "writing 2x in title style"
    metrics = page.locator("#metrics").inner_text().lower()
    assert "predict time" in metrics and "total time" in metrics
    assert not page.locator("#token-dialog").evaluate("d => d.open")  # loopback: no token
    tab.shot("text-model")

    # a failure shows the remote message
    page.fill("#in-prompt", "nothing")
    page.click("#run")
    wait_status(tab, "failed")
    assert "there is nothing to write about" in page.locator("#error").inner_text()

    # the history keeps both, with their inputs; an old one can be viewed and reused
    rows = page.locator("#history-rows tr")
    assert rows.count() == 2
    assert [rows.nth(i).get_attribute("data-status") for i in range(2)] == ["failed",
                                                                            "succeeded"]
    assert "prompt=hello world, repeat=2, style=title, exclaim=true" in rows.nth(1).inner_text()
    rows.nth(1).get_by_text("View").click()
    assert page.locator("#output").inner_text() == "Hello World! Hello World!"
    rows.nth(1).get_by_text("Reuse inputs").click()
    assert page.input_value("#in-prompt") == "hello world"
    assert page.is_checked("#in-exclaim")
    record = httpx.get(f"{running.url}/predictions/{rows.nth(1).get_attribute('data-id')}",
                       timeout=30).json()
    assert record["status"] == "succeeded" and record["input"]["style"] == "title"
    tab.shot("text-model-history")
    page.set_viewport_size({"width": 420, "height": 900})  # one column on a phone
    assert page.locator("#output").bounding_box()["x"] < 100
    tab.shot("text-model-narrow")


def test_a_number_model_shows_the_servers_validation_messages_before_sending(servers, tabs):
    running = servers("Scale")
    tab = tabs()
    page = tab.page
    load(tab, running.url + "/playground")
    assert page.locator("#in-x").get_attribute("step") == "any"
    assert page.locator("#in-factor").get_attribute("step") == "2"
    sent = []
    page.on("request", lambda r: r.method == "PUT" and sent.append(r.url))
    cases = [
        ({"x": "150", "factor": "3", "tags": "[1, 2, 3, 4]"},
         {"x": 150, "factor": 3, "tags": [1, 2, 3, 4]}),
        ({"x": "-0.5", "factor": "10", "tags": '[1, "two"]'},
         {"x": -0.5, "factor": 10, "tags": [1, "two"]}),
        ({"x": "", "factor": "0", "tags": '{"a": 1}'}, {"factor": 0, "tags": {"a": 1}}),
    ]
    for typed, sent_as in cases:
        for name, text in typed.items():
            page.fill(f"#in-{name}", text)
        page.click("#run")
        expected = server_problems(running.url, sent_as)
        shown = {name: field_error(tab, name) for name in typed}
        # the page adds where inside a list it is; the message itself is the server's
        assert {k: v.split(" (at ")[0] for k, v in shown.items()} == expected, \
            (shown, expected)
        if typed is cases[0][0]:
            assert expected == {"x": "Expected `float` <= 100.0",
                                "factor": "Expected `int` that's a multiple of 2",
                                "tags": "Expected `array` of length <= 3"}
            tab.shot("number-model-validation")
    assert shown["tags"] == "Expected `array`, got `object`"
    assert sent == [], "a form with bad inputs must not be sent"
    assert page.locator("#status").get_attribute("data-status") == "invalid"

    page.fill("#in-x", "12.5")
    page.fill("#in-factor", "4")
    page.fill("#in-tags", "[7, 8]")
    page.click("#run")
    wait_status(tab, "succeeded")
    assert page.locator(".field.invalid").count() == 0
    out = json.loads(page.locator("#output .json-output").inner_text())
    assert out == {"x": 12.5, "factor": 4, "scaled": 50.0, "tags": [7, 8]}
    assert "\n  " in page.locator("#output .json-output").inner_text()  # pretty-printed
    tab.shot("number-model-result")


# (input, what is typed into its field, the JSON the server gets for it)
BAD_INPUTS = [
    ("name", "a", "a"),
    ("name", "abcdefghi", "abcdefghi"),
    ("name", "ABC", "ABC"),
    ("ratio", "0", 0.0),
    ("ratio", "1", 1.0),
    ("step", "0.3", 0.3),
    ("maybe", "-1", -1),
    ("maybe", "1.5", 1.5),
    ("point", '{"x": "a"}', {"x": "a"}),
    ("point", "{}", {}),
    ("point", "[1]", [1]),
    ("pair", "[1]", [1]),
    ("pair", "[1, 2]", [1, 2]),
    ("weights", '{"a": "b"}', {"a": "b"}),
    ("weights", "[1]", [1]),
]


def _where(loc):
    """The page's way of writing a location inside an input: point.x, pair[1]."""
    out = str(loc[0])
    for part in loc[1:]:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def test_every_kind_of_input_is_checked_with_the_servers_message(servers, tabs):
    running = servers("Kinds")
    tab = tabs()
    page = tab.page
    load(tab, running.url + "/")
    kinds = {n: page.locator(f"[data-field={n}]").get_attribute("data-kind")
             for n in ("name", "ratio", "color", "maybe", "point", "pair", "weights")}
    assert kinds == {"name": "string", "ratio": "number", "color": "select",
                     "maybe": "number", "point": "json", "pair": "json",
                     "weights": "json"}
    assert page.locator("#in-color option").all_inner_texts() == ["(default)", "green",
                                                                   "red"]
    for name, typed, value in BAD_INPUTS:
        page.click("#reset")
        page.fill(f"#in-{name}", typed)
        page.click("#run")
        r = httpx.post(f"{running.url}/predictions", json={"input": {name: value}},
                       timeout=30)
        assert r.status_code == 422, (name, typed, r.text)
        (problem,) = r.json()["detail"]
        loc = problem["loc"][2:]
        expected = problem["msg"] + (f" (at {_where(loc)})" if len(loc) > 1 else "")
        assert field_error(tab, name) == expected, (name, typed)
    tab.shot("kinds-validation")
    page.click("#reset")
    page.select_option("#in-color", label="green")
    page.fill("#in-maybe", "3")
    page.fill("#in-point", '{"x": 4}')
    page.click("#run")
    wait_status(tab, "succeeded")
    out = json.loads(page.locator("#output .json-output").inner_text())
    assert out == {"name": "abc", "ratio": 0.5, "step": 0.5, "color": "green", "maybe": 3,
                   "point": {"x": 4, "y": 0}, "pair": [1, "a"], "weights": {}}
    assert page.locator("#history-rows tr").count() == 1  # the bad ones were never sent


def test_an_image_output_is_shown_inline_with_a_download_link(servers, tabs):
    running = servers("Painter")
    tab = tabs()
    page = tab.page
    load(tab, running.url + "/")
    page.fill("#in-width", "120")
    page.fill("#in-height", "72")
    page.select_option("#in-hue", label="green")
    page.click("#run")
    wait_status(tab, "succeeded")
    image = page.locator("#output img")
    page.wait_for_function("() => document.querySelector('#output img').complete")
    assert image.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [120, 72]
    link = page.locator("#output a.download")
    assert link.get_attribute("download").endswith(".png")
    assert link.get_attribute("href").startswith("blob:")
    assert "painted 120x72" in page.locator("#logs").inner_text()
    tab.shot("image-model")

    # a file input: picked in the form, sent as a multipart part, returned as it is
    assert page.locator("#in-background").get_attribute("type") == "file"
    page.set_input_files("#in-background", files=[{
        "name": "dot.png", "mimeType": "image/png", "buffer": png(20, 10, _red)}])
    page.click("#run")
    page.wait_for_function("() => document.querySelector('#logs').innerText"
                           ".includes('returning dot.png')")
    wait_status(tab, "succeeded")
    page.wait_for_function("() => document.querySelector('#output img').complete")
    assert page.locator("#output img").evaluate("i => [i.naturalWidth, i.naturalHeight]") \
        == [20, 10]
    first = page.locator("#history-rows tr").first
    assert "background=dot.png" in first.inner_text()
    tab.shot("image-model-upload")


def _red(x, y):
    return (220, 30, 30)


def test_a_list_of_files_goes_in_and_comes_back_as_a_gallery(servers, tabs):
    running = servers("Collage")
    tab = tabs()
    page = tab.page
    load(tab, running.url + "/")
    assert page.locator("#in-images").get_attribute("multiple") is not None
    page.set_input_files("#in-images", files=[
        {"name": f"{n}.png", "mimeType": "image/png", "buffer": png(w, h, _red)}
        for n, w, h in (("wide", 48, 16), ("tall", 16, 48))])
    page.click("#run")
    wait_status(tab, "succeeded")
    page.wait_for_function("() => [...document.querySelectorAll('#output .gallery img')]"
                           ".filter(i => i.complete).length === 2")
    sizes = page.locator("#output .gallery img").evaluate_all(
        "l => l.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[48, 16], [16, 48]]
    assert page.locator("#logs").inner_text().strip() == \
        "got wide.png (image/png), tall.png (image/png)"
    tab.shot("files-model")

    # one file for a list input is still a list (of one); a file that is not an image
    # is a download link
    page.set_input_files("#in-images", files=[
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"just text\n"}])
    page.click("#run")
    page.wait_for_function("() => document.querySelectorAll('#history-rows tr').length"
                           " === 2 && document.querySelector('#status').dataset.status"
                           " === 'succeeded'")
    assert page.locator("#output img").count() == 0
    link = page.locator("#output .gallery a.download")
    assert link.count() == 1 and link.get_attribute("download").endswith(".txt")
    assert "text/plain, 10 B" in page.locator("#output .gallery").inner_text()
    with page.expect_download() as download:
        link.click()
    with open(download.value.path(), "rb") as f:
        assert f.read() == b"just text\n"


def test_a_stream_shows_tokens_logs_and_progress_as_they_come(servers, tabs, fifo):
    running = servers("Tokens", gate=fifo)
    tab = tabs()
    page = tab.page
    load(tab, running.url + "/")
    page.click("#run")
    # the first token is on the page while the model waits at the gate
    page.wait_for_function(
        "() => document.querySelector('#output').innerText === 'streams'")
    assert page.locator("#status").get_attribute("data-status") == "processing"
    assert page.locator("#progress").evaluate("p => [p.value, p.max]") == [1, 5]
    assert page.locator("#progress-label").inner_text() == "tokens · 1 / 5 (20%)"
    assert page.locator("#logs").inner_text().strip() == "token 1 of 5"
    assert page.is_enabled("#cancel") and page.is_disabled("#run")
    tab.shot("stream-running")
    open_gate(fifo)
    wait_status(tab, "succeeded")
    assert page.locator("#output").inner_text() == "streams arrive token by token"
    assert page.locator("#output pre").count() == 1  # one text, not five chunks
    assert page.locator("#progress").evaluate("p => [p.value, p.max]") == [5, 5]
    assert page.locator("#logs").inner_text().split("\n")[:5] == [
        f"token {i} of 5" for i in range(1, 6)]
    assert "first output" in page.locator("#metrics").inner_text().lower()
    assert page.locator("[data-metric=tokens] dd").inner_text() == "5"  # the model's own
    tab.shot("stream-done")


def test_cancel_stops_a_long_run(servers, tabs):
    running = servers("Endless")
    tab = tabs()
    page = tab.page
    load(tab, running.url + "/")
    page.click("#run")
    page.wait_for_function("() => document.querySelector('#progress').value >= 3")
    tab.shot("cancel-running")
    page.click("#cancel")
    wait_status(tab, "canceled")
    pid = page.locator("#history-rows tr").first.get_attribute("data-id")
    assert httpx.get(f"{running.url}/predictions/{pid}", timeout=30).json()["status"] \
        == "canceled"
    assert page.locator("#history-rows tr").first.get_attribute("data-status") == "canceled"
    assert page.is_enabled("#run") and page.is_disabled("#cancel")
    assert page.locator("#output").inner_text().startswith("...")
    tab.shot("cancel-done")


@pytest.fixture
def token_server(tmp_path):
    """``corral serve`` itself (a subprocess) with a token, file outputs as /files links."""
    token_file = tmp_path / "token"
    token_file.write_text("let-me-in\n")
    with corral_serve(f"{MODELS}:Painter", "--token-file", str(token_file),
                      "--file-outputs", "url") as base:
        yield base


def test_with_a_token_the_page_asks_once_and_keeps_it_in_session_storage(token_server, tabs):
    tab = tabs()
    page = tab.page
    page.goto(token_server + "/")
    dialog = page.locator("#token-dialog")
    page.wait_for_function("() => document.querySelector('#token-dialog').open")
    tab.shot("auth-asks")
    page.fill("#token-input", "wrong")
    page.click("#token-form button[type=submit]")
    page.wait_for_function("() => !document.querySelector('#token-error').hidden")
    assert "refused" in page.locator("#token-error").inner_text()
    page.fill("#token-input", "let-me-in")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#run:not([disabled])")
    assert not dialog.evaluate("d => d.open")
    assert page.evaluate("() => [sessionStorage.getItem('corral.playground.token'), "
                         "localStorage.length, document.cookie]") == ["let-me-in", 0, ""]
    page.fill("#in-width", "32")
    page.fill("#in-height", "16")
    page.click("#run")
    wait_status(tab, "succeeded")
    # the output is a /files link, fetched with the token and shown inline
    page.wait_for_function("() => { const i = document.querySelector('#output img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    assert page.locator("#output img").evaluate("i => [i.naturalWidth, i.naturalHeight]") \
        == [32, 16]
    assert page.locator("#output a.download").get_attribute("download") == "gradient.png"
    tab.shot("auth-done")

    page.reload()  # the same tab's session: no question asked again
    page.wait_for_selector("#run:not([disabled])")
    assert not dialog.evaluate("d => d.open")
    assert page.locator("#history-rows tr").count() == 1  # the session's history is kept

    other = tabs()  # another session knows no token
    other.page.goto(token_server + "/playground")
    other.page.wait_for_function("() => document.querySelector('#token-dialog').open")
    # the 401s that made the page ask are the only errors either page logged
    for t in (tab, other):
        t.errors[:] = [e for e in t.errors if "401" not in e]


def test_a_cog_predictor_is_driven_by_cogs_schema_and_events(cog_servers, tabs):
    """Predictors written against Cog's SDK: the form from the schema as ``cog build``
    writes it (x-order, choices as enum components, x-cog-secret, nullable), Cog's own
    validation messages, and coglet's SSE events (a failure in a ``completed`` event)."""
    inputs, secret, tokens, failing = cog_servers(
        "inputs:Predictor", "secret:Predictor", "streaming:Predictor", "streaming:Failing")

    tab = tabs()
    page = tab.page
    load(tab, inputs.url + "/")
    fields = page.locator("[data-field]").evaluate_all("l => l.map(n => n.dataset.field)")
    assert fields == ["prompt", "steps", "scale", "mode", "tag", "legacy", "seed"]
    assert page.locator("#in-mode option").all_inner_texts() == ["(default)", "fast", "slow"]
    assert "An enumeration" not in page.locator("[data-field=mode]").inner_text()
    assert "deprecated" in page.locator("[data-field=legacy]").inner_text()
    assert page.locator("#method").inner_text() == "returns one output"
    # every message is the server's, under Cog's rules ("Field required"; a whole number
    # for a float input stays an int)
    page.fill("#in-steps", "99")
    page.fill("#in-scale", "30")
    page.fill("#in-tag", "A1")
    page.click("#run")
    expected = server_problems(inputs.url, {"steps": 99, "scale": 30, "tag": "A1"})
    assert expected["scale"] == "Expected `int` <= 20" and expected["seed"] == "Field required"
    assert {name: field_error(tab, name) for name in expected} == expected
    assert page.locator("#history-rows tr").count() == 0
    tab.shot("cog-inputs-validation")
    page.click("#reset")
    page.fill("#in-prompt", "cat")
    page.fill("#in-seed", "3")
    page.select_option("#in-mode", label="slow")
    page.click("#run")
    wait_status(tab, "succeeded")
    assert page.locator("#output").inner_text() == "cat|4|7.5|slow|ab|False|3"

    tab = tabs()  # a Secret: a password field, masked in the history as in the record
    page = tab.page
    load(tab, secret.url + "/")
    assert page.locator("#in-token").get_attribute("type") == "password"
    assert page.locator("#in-spare").get_attribute("type") == "password"
    # not hex: the history's prediction ids are, and "abc" turned up in one of them
    page.fill("#in-token", "qwz")
    page.click("#run")
    wait_status(tab, "succeeded")
    assert page.locator("#output").inner_text() == "Secret:3:zwq:True"
    assert page.locator("#logs").inner_text().strip() == "token is **********"
    row = page.locator("#history-rows tr").first
    assert "token=**********" in row.inner_text()
    assert "qwz" not in page.evaluate(
        "() => sessionStorage.getItem('corral.playground.history')")
    page.click("#reset")
    row.get_by_text("Reuse inputs").click()  # the mask is not an input to send again
    assert page.input_value("#in-token") == ""
    tab.shot("cog-secret")

    tab = tabs()  # a ConcatenateIterator: one text, its log lines as they come
    page = tab.page
    load(tab, tokens.url + "/")
    assert page.locator("#method").inner_text() == "streams its output"
    page.fill("#in-n", "3")
    page.click("#run")
    wait_status(tab, "succeeded")
    assert page.locator("#output pre").count() == 1
    assert page.locator("#output").inner_text().strip() == "tok0 tok1 tok2"
    assert page.locator("#logs").inner_text().strip() == "token 0\ntoken 1\ntoken 2"
    tab.shot("cog-stream")

    tab = tabs()  # a stream that fails: what it sent, and the remote message
    page = tab.page
    load(tab, failing.url + "/")
    page.fill("#in-at", "2")
    page.click("#run")
    wait_status(tab, "failed")
    assert page.locator("#output").inner_text() == "01"
    assert page.locator("#error").inner_text() == "broke at 2"
    assert page.locator("#history-rows tr").first.get_attribute("data-status") == "failed"
    tab.shot("cog-stream-failed")
