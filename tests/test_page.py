"""The page at `/` in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver` packages) driven by Selenium types a sentence, presses Predict, and the page
must show what offline inference says for that sentence (class probabilities as bars; entities
highlighted with their labels). A screenshot of each page is saved (to `$BERTKIT_SCREENSHOTS`
when set, else the test's temporary folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import bertkit
from bertkit.models.heads import BertForSequenceClassification, BertForTokenClassification

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip(
        "headless Chromium is not installed (Debian: apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from bertkit.serve.app import create_app  # noqa: E402
from bertkit.serve.limits import Serving  # noqa: E402

SENTENCE = "Angela Merkel met Emmanuel Macron in Paris on Tuesday ."
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("BERTKIT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    return path


def _type_and_predict(driver, url: str, text: str) -> None:
    driver.get(url + "/")
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: "serves" in d.find_element(By.ID, "info").text)  # /v1/model answered
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "out").get_attribute("data-done") == "1")
    assert driver.find_element(By.ID, "error").text == ""


def test_page_highlights_entities(browser, head_dir, tmp_path, loopback):
    d = head_dir(tmp_path / "ner", BertForTokenClassification, "ner", NER_LABELS)
    want = bertkit.pipeline("ner", model=d)(SENTENCE)
    with loopback(create_app(d)) as url:
        _type_and_predict(browser, url, SENTENCE)
        shown = browser.execute_script(  # (label, highlighted text) of each <mark>
            "return [...document.querySelectorAll('#out mark')]"
            ".map(m => [m.querySelector('small').textContent, m.firstChild.textContent])"
        )
        _screenshot(browser, tmp_path, "page-ner.png")
    assert [[e["label"], e["text"]] for e in want] == shown
    if not want:
        assert "(no entities)" in browser.find_element(By.ID, "out").text


def test_page_shows_class_probabilities(browser, head_dir, tmp_path, loopback):
    d = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["negative", "positive"])
    text = "a gripping , beautifully acted film"
    want = bertkit.pipeline("text-classification", model=d)(text)
    with loopback(create_app(d)) as url:
        _type_and_predict(browser, url, text)
        bars = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#out .bar")]
        cosine = browser.find_element(By.ID, "compare")
        cosine.click()
        WebDriverWait(browser, 60).until(lambda d: "cosine" in d.find_element(By.ID, "cosine").text)
        _screenshot(browser, tmp_path, "page-classify.png")
    ranked = sorted(want["scores"].items(), key=lambda kv: -kv[1])
    assert [b.split()[0] for b in bars] == [label for label, _ in ranked]
    for bar, (_, p) in zip(bars, ranked, strict=True):
        assert f"{100 * p:.1f} %" in bar


def test_page_asks_for_the_key_of_a_server_that_has_one(browser, head_dir, tmp_path, loopback):
    """With --api-key the page asks for the key once, then predicts as without one."""
    d = head_dir(tmp_path / "clf", BertForSequenceClassification, "classify", ["negative", "positive"])
    text = "a gripping , beautifully acted film"
    want = bertkit.pipeline("text-classification", model=d)(text)
    with loopback(create_app(d, serving=Serving(api_key="page-secret"))) as url:
        browser.get(url + "/")
        browser.execute_script("sessionStorage.clear()")
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_element(By.ID, "keybox").is_displayed())
        browser.find_element(By.ID, "key").send_keys("page-secret")
        browser.find_element(By.ID, "usekey").click()
        _type_and_predict(browser, url, text)  # the key is kept for the tab
        bars = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#out .bar")]
    assert bars[0].split()[0] == want["label"]
