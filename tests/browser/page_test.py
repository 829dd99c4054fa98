"""Drive mawqif's web page in headless Chromium (Debian's, through playwright).

Run by tests/integration/serve_browser.rs against a `mawqif serve` it started on
127.0.0.1; not meant to be run alone, though it can be:

    python tests/browser/page_test.py --url http://127.0.0.1:PORT \
        --article eval/fixtures/article.txt --chromium /usr/bin/chromium --out DIR

Pastes the article, classifies it, and checks what a reader sees: every
sentence coloured by its label (the labels the API gives), the four scores on
hover and on keyboard focus, the chart of label shares, the JSONL download, the
file upload, the ؟ on labels worth checking by hand, a phone-width layout
without sideways scrolling, and that the page fetched nothing but from the
server. Screenshots go to --out.
"""

import argparse
import json
import math
import sys
import tempfile
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LABELS = ["report", "quotation", "endorsement", "opinion"]


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def api_classify(url, text):
    """The first result and the threshold under which labels are marked unsure."""
    body = json.dumps({"text": text, "id": "text"}).encode()
    req = urllib.request.Request(
        f"{url}/v1/classify", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = json.load(r)
    return answer["results"][0], answer["unsure_below"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--article", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    article = Path(args.article).read_text(encoding="utf-8")
    expected, unsure_below = api_classify(args.url, article)
    units = expected["units"]
    unsure = [u["index"] for u in units if max(u["scores"].values()) < unsure_below]
    check(len(units) == 49, f"API gave {len(units)} units")

    foreign, problems = [], []
    with tempfile.TemporaryDirectory(prefix="mawqif-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
            locale="ar",
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.on(
            "request",
            lambda r: None
            if r.url.startswith(args.url) or r.url.startswith(("blob:", "data:"))
            else foreign.append(r.url),
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )

        page.goto(f"{args.url}/")
        check(page.evaluate("document.documentElement.dir") == "rtl", "page is not dir=rtl")
        check(page.evaluate("getComputedStyle(document.body).direction") == "rtl", "body is not RTL")
        check(page.evaluate("document.documentElement.lang") == "ar", "page is not lang=ar")
        expect(page.locator("#model-status")).to_have_class("model-status ready", timeout=30_000)

        # Client-side check: classifying nothing says so.
        page.click("#classify")
        expect(page.locator("#message")).to_have_class("message error")

        # Upload fills the text box.
        page.set_input_files("#file", args.article)
        expect(page.locator("#text")).to_have_value(article.lstrip("\ufeff"), timeout=10_000)
        page.click("#clear")
        expect(page.locator("#text")).to_have_value("")

        # Paste the article and classify.
        page.fill("#text", article)
        page.click("#classify")
        spans = page.locator("#article .unit")
        expect(spans).to_have_count(49, timeout=60_000)
        expect(page.locator("#result")).to_be_visible()

        # Each sentence: its own text, the API's label, its label's colour.
        seen = page.evaluate(
            """() => [...document.querySelectorAll('#article .unit')].map(s => ({
                text: s.textContent, label: s.dataset.label, cls: s.className,
                bg: getComputedStyle(s).backgroundColor,
                edge: getComputedStyle(s).borderBottomStyle }))"""
        )
        colour_of = {}
        for u, s in zip(units, seen):
            check(s["text"] == u["text"], f"sentence {u['index']} shows {s['text']!r}, not {u['text']!r}")
            check(s["label"] == u["label"], f"sentence {u['index']}: page {s['label']}, API {u['label']}")
            check(f"label-{u['label']}" in s["cls"].split(), f"sentence {u['index']} lacks its class")
            check(s["bg"] not in ("rgba(0, 0, 0, 0)", "transparent"), f"sentence {u['index']} is not coloured")
            colour_of.setdefault(u["label"], set()).add(s["bg"])
        for label, colours in colour_of.items():
            check(len(colours) == 1, f"{label} sentences have several colours: {colours}")
        distinct = {next(iter(c)) for c in colour_of.values()}
        check(len(distinct) == len(colour_of), f"labels share colours: {colour_of}")
        check(len(colour_of) >= 3, f"the model gave only {list(colour_of)}; the colour check needs several labels")
        # Labels under the threshold carry a "؟" after the sentence (CSS, so
        # the text above stays the sentence's own) and are counted in the
        # summary; the others carry nothing.
        marked = page.evaluate(
            """() => [...document.querySelectorAll('#article .unit')].map(s => ({
                index: Number(s.dataset.index), unsure: s.classList.contains('unsure'),
                after: getComputedStyle(s, '::after').content }))"""
        )
        check([m["index"] for m in marked if m["unsure"]] == unsure,
              f"page marks {[m['index'] for m in marked if m['unsure']]} unsure, API scores give {unsure}")
        for m in marked:
            want = '"؟"' if m["unsure"] else "none"
            check(m["after"] == want, f"sentence {m['index']} is followed by {m['after']}, want {want}")
        check(page.locator("#summary").get_attribute("data-unsure") == str(len(unsure)), "summary's unsure count")
        if unsure:
            check(f" {len(unsure)} منها موسومة" in page.locator("#summary").text_content(), "summary does not count the marked sentences")
        # The text between sentences (dropped lines) is shown too, uncoloured.
        shown = page.evaluate("document.getElementById('article').textContent")
        check(shown == article.rstrip(), "the article is not shown whole")

        # The chart: one bar per label, as long as its share.
        profile = expected["profile"]
        bars = page.evaluate(
            """() => [...document.querySelectorAll('#chart rect.bar')].map(b => ({
                label: b.dataset.label, share: Number(b.dataset.share),
                width: b.getBBox().width, fill: getComputedStyle(b).fill }))"""
        )
        check([b["label"] for b in bars] == LABELS, f"chart bars: {[b['label'] for b in bars]}")
        for b in bars:
            want = profile["shares"][b["label"]]
            check(math.isclose(b["share"], want, abs_tol=1e-6), f"{b['label']} share {b['share']} != {want}")
            check(abs(b["width"] - max(want * 230, 2 if want > 0 else 0)) < 0.6, f"{b['label']} bar width {b['width']}")
        check(len({b["fill"] for b in bars}) == 4, "chart bars share colours")
        check(math.isclose(sum(b["share"] for b in bars), 1.0, abs_tol=1e-4), "shares do not sum to 1")

        # Hover: the four scores of that sentence.
        def tip_scores():
            return page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('#tip .score')]
                    .map(td => [td.dataset.label, Number(td.textContent)]))"""
            )

        def check_tip(u, how):
            expect(page.locator("#tip")).to_be_visible()
            got = tip_scores()
            for label in LABELS:
                check(
                    abs(got.get(label, -1) - u["scores"][label]) < 5e-4,
                    f"{how}: tip shows {got} for sentence {u['index']}, want {u['scores']}",
                )

        spans.nth(3).hover()
        check_tip(units[3], "hover")
        page.screenshot(path=str(out / "page-hover.png"))
        page.keyboard.press("Escape")
        expect(page.locator("#tip")).to_be_hidden()

        # Keyboard: Tab from the result heading reaches the sentences in order.
        page.focus("#result-title")
        page.keyboard.press("Tab")
        check(page.evaluate("document.activeElement.dataset.index") == "0", "Tab did not reach sentence 0")
        check_tip(units[0], "focus")
        page.keyboard.press("Tab")
        check(page.evaluate("document.activeElement.dataset.index") == "1", "Tab did not reach sentence 1")
        check_tip(units[1], "focus")
        page.keyboard.press("Escape")

        # Download: the JSONL contract, one line per sentence.
        with page.expect_download() as info:
            page.click("#download")
        lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
        check(len(lines) == 49, f"download has {len(lines)} lines")
        for line, u in zip(lines, units):
            rec = json.loads(line)
            check(sorted(rec) == sorted(["file", "index", "start", "end", "text", "label", "scores"]), f"keys {sorted(rec)}")
            check(rec["label"] == u["label"] and rec["start"] == u["start"], f"download differs at {u['index']}")

        # With the rule baseline every score is 0 or 1, so nothing above is
        # unsure. Lower two sentences' scores in the server's answer and check
        # that the page marks exactly those, counts them, and says so on hover.
        doubtful = [2, 7]

        def lower_scores(route):
            answer = route.fetch().json()
            for i in doubtful:
                unit = answer["results"][0]["units"][i]
                others = [k for k in LABELS if k != unit["label"]]
                unit["scores"] = {unit["label"]: 0.61, **{k: 0.13 for k in others}}
            route.fulfill(json=answer)

        page.route("**/v1/classify", lower_scores)
        page.click("#classify")
        expect(page.locator("#summary")).to_have_attribute("data-unsure", str(len(doubtful)), timeout=60_000)
        marked = page.evaluate("[...document.querySelectorAll('#article .unit.unsure')].map(s => Number(s.dataset.index))")
        check(marked == doubtful, f"page marks {marked} unsure, the answer lowered {doubtful}")
        check(f" {len(doubtful)} منها موسومة" in page.locator("#summary").text_content(), "summary does not count the marked sentences")
        check(page.evaluate("getComputedStyle(document.querySelectorAll('#article .unit')[7], '::after').content") == '"؟"',
              "an unsure sentence has no question mark after it")
        spans.nth(7).hover()
        expect(page.locator("#tip .tip-unsure")).to_have_count(1)
        spans.nth(3).hover()
        expect(page.locator("#tip .tip-unsure")).to_have_count(0)
        page.keyboard.press("Escape")
        page.unroute("**/v1/classify")

        page.screenshot(path=str(out / "page-desktop.png"), full_page=True)

        # Phone width: no sideways scrolling; a tap shows the scores on screen.
        page.set_viewport_size({"width": 375, "height": 812})
        page.wait_for_timeout(200)
        scroll = page.evaluate("document.documentElement.scrollWidth")
        check(scroll <= 376, f"page is {scroll}px wide at a 375px viewport")
        spans.nth(10).scroll_into_view_if_needed()
        spans.nth(10).click()
        check_tip(units[10], "tap")
        box = page.locator("#tip").bounding_box()
        check(box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 376, f"tip off screen: {box}")
        button = page.locator("#classify").bounding_box()
        check(button["height"] >= 40, f"buttons too small to tap: {button}")
        page.screenshot(path=str(out / "page-phone.png"), full_page=True)
        page.keyboard.press("Escape")

        context.close()

    check(not foreign, f"the page fetched from elsewhere: {foreign}")
    check(not problems, "; ".join(problems))
    print(json.dumps({
        "sentences": len(units),
        "labels": {k: len([u for u in units if u["label"] == k]) for k in LABELS},
        "unsure": len(unsure),
        "screenshots": sorted(str(p) for p in out.glob("*.png")),
    }, ensure_ascii=False))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"page test failed: {e}", file=sys.stderr)
        sys.exit(1)
