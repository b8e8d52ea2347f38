"""The page and the maps in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, via Selenium).

Selenium is pointed at /usr/bin/chromedriver and /usr/bin/chromium explicitly and
never downloads a driver or a browser. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_web import IMAGES, photos, running_server

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
LAND = (236, 231, 216)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists() or not CHROMEDRIVER.exists(),
                       reason="Debian chromium/chromium-driver not installed (run scripts/install_browser.sh)"),
    pytest.mark.skipif(not IMAGES.is_dir(), reason=f"real photos not found at {IMAGES}"),
]


@pytest.fixture(scope="module")
def browser():
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="globeflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def land_fraction(png: Path) -> float:
    """Share of pixels of an element's screenshot in the map's land colour."""
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return float((np.abs(img - np.array(LAND)).max(axis=-1) <= 4).mean())


def reddish_fraction(png: Path) -> float:
    """Share of pixels of an element's screenshot coloured by the density ramp (red well above blue)."""
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return float(((img[..., 0] - img[..., 2]) > 70).mean())


def test_standalone_html_map_renders_with_land(browser, tmp_path):
    from globeflow.maps import render_html
    from globeflow.prediction import Mode

    rng = np.random.default_rng(0)
    samples = np.column_stack([rng.normal(-15, 6, 400), rng.normal(-60, 8, 400)])
    page = tmp_path / "map.html"
    render_html(None, samples, best_guess=(-15.0, -60.0), truth=(-23.5, -46.6),
                modes=[Mode(-15.0, -60.0, 0.8, 700.0, "BR"), Mode(5.0, 20.0, 0.1, 300.0, "CF")], title="Standalone map", out_path=page)
    browser.get(page.as_uri())
    svg = browser.find_element("id", "gf-svg")
    assert svg.size["width"] > 600
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "standalone_page.png"))
    shot = SCREENSHOTS / "standalone_map.png"
    svg.screenshot(str(shot))
    assert land_fraction(shot) > 0.15
    view_box = lambda: browser.execute_script("return arguments[0].getAttribute('viewBox')", svg)  # noqa: E731
    before = view_box()
    browser.find_element("id", "gf-in").click()
    assert before.startswith("0 0 ") and view_box() != before
    from selenium.webdriver.common.action_chains import ActionChains

    tip = browser.find_element("id", "gf-tip")
    ActionChains(browser).move_to_element(browser.find_elements("css selector", ".gf-mode")[1]).perform()
    assert tip.is_displayed() and "Mode 2" in tip.text and "mass 10.0 %" in tip.text
    ActionChains(browser).move_to_element(browser.find_element("css selector", ".gf-best")).perform()
    assert tip.is_displayed() and tip.text.startswith("Best guess: 15.000°S, 60.000°W")


def test_upload_page_shows_map_and_guesses(browser):
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server("--num-samples", "256") as base:
        browser.get(base + "/")
        photo = photos(1, offset=50)[0]
        browser.find_element("id", "files").send_keys(str(photo))
        browser.find_element("id", "submit").click()
        WebDriverWait(browser, 90).until(
            lambda d: d.find_element("id", "status").get_attribute("data-done") == "1")
        status = browser.find_element("id", "status").text
        assert status.startswith("Done"), status
        card = browser.find_element("css selector", ".result")
        assert photo.name in card.text
        best = card.find_element("css selector", ".best-guess").text
        assert best.startswith("Best guess:") and "°" in best and "(in " in best
        assert card.find_element("css selector", ".guess-how").text.startswith("Picked as the ")
        assert card.find_element("css selector", ".top-country").text.startswith("Most probable country: ")
        assert "the same" in card.find_element("css selector", ".distribution").text
        assert len(card.find_elements("css selector", ".modes tr")) >= 2
        assert "radius" in card.find_element("css selector", ".radii").text
        frame = card.find_element("tag name", "iframe")
        browser.execute_script("arguments[0].scrollIntoView()", frame)
        browser.switch_to.frame(frame)
        WebDriverWait(browser, 20).until(lambda d: d.find_elements("css selector", "#gf-svg .gf-best"))
        assert browser.find_elements("css selector", "#gf-svg image")  # the density overlay
        browser.switch_to.default_content()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "web_upload_result.png"
        browser.save_screenshot(str(shot))
        map_shot = SCREENSHOTS / "web_upload_map.png"  # the map element alone: no scroll offsets to match
        frame.screenshot(str(map_shot))
        assert reddish_fraction(map_shot) > 0.01  # the density is drawn
        # without the density and sample layers, the land underneath is plain to see
        browser.switch_to.frame(frame)
        browser.execute_script("document.querySelectorAll('#gf-svg image, .gf-samples')"
                               ".forEach(function(e){e.style.display='none';})")
        browser.switch_to.default_content()
        bare = SCREENSHOTS / "web_upload_land_only.png"
        frame.screenshot(str(bare))
        assert land_fraction(bare) > 0.1
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(SCREENSHOTS / "web_upload_top.png"))

        # the JSON API from the page's origin: health, then a predict with the chosen file
        health = browser.execute_async_script(
            "var done=arguments[0]; fetch('/api/health').then(r=>r.json()).then(done)")
        assert health["status"] == "ok"
        reply = browser.execute_async_script("""
            var done=arguments[0], fd=new FormData();
            fd.append('files', document.getElementById('files').files[0]);
            fd.append('num_samples', '128'); fd.append('seed', '3');
            fetch('/api/predict', {method:'POST', body:fd}).then(r=>r.json().then(b=>done([r.status,b])));
        """)
        assert reply[0] == 200 and reply[1]["results"][0]["input"] == photo.name
        assert "best_guess" in reply[1]["results"][0]
