// The web page of `camstream serve`, driven in headless Chromium: load it, upload the
// sample video, wait for the job's `done`, check that the annotated video plays and
// the frame's label is shown, and save a screenshot. Then a picture through :explain.
// Run by scripts/browser-test.sh, which starts the server:
//   node tests/browser/page.mjs http://127.0.0.1:PORT VIDEO PICTURE SIGNAL SCREENSHOT_DIR
// The server must serve `shapes` (first) and `ecg`.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import path from "node:path";

const [url, video, picture, signal, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0);
  assert.equal(await page.inputValue("#model"), "shapes");
  assert.ok((await page.locator("#layer option").count()) > 3, "the layers are listed");

  // A video becomes a job: progress and thumbnails over SSE, then the player.
  await page.setInputFiles("#file", video);
  await page.waitForSelector("#status[data-state=done]", { timeout: 180_000 });
  const thumbs = await page.locator("#thumbs img").count();
  assert.ok(thumbs >= 5, `thumbnails streamed in (${thumbs})`);
  const played = await page.waitForFunction(
    () => {
      const v = document.querySelector("#video");
      return v.readyState >= 2 && v.currentTime > 0.5 && !v.paused ? v.currentTime : false;
    },
    null,
    { timeout: 60_000 },
  );
  const t = await played.jsonValue();
  const label = await page.textContent("#live-label");
  assert.match(label, /frame \d+: (circle|square|triangle) \d/, `the label is shown: ${label}`);
  await page.locator("#video").evaluate((v) => v.pause());
  await page.screenshot({ path: path.join(shots, "serve-video.png"), fullPage: true });
  console.log(`video: ${thumbs} thumbnails, playing at ${t.toFixed(2)} s, label "${label.trim()}"`);

  // A picture goes to :explain and comes back as an overlay.
  await page.setInputFiles("#file", picture);
  await page.waitForSelector("#image-result:not([hidden])", { timeout: 60_000 });
  const card = await page.textContent("#image-label");
  assert.match(card, /(circle|square|triangle) \d+\.\d %/, card);
  const width = await page.locator("#overlay").evaluate((i) => i.naturalWidth);
  assert.ok(width > 0, "the overlay decodes");
  await page.screenshot({ path: path.join(shots, "serve-image.png"), fullPage: true });
  console.log(`picture: "${card.trim()}"`);

  // A recording for the ECG model: the plot, scrubbed with the slider.
  await page.selectOption("#model", "ecg");
  await page.setInputFiles("#file", signal);
  await page.waitForSelector("#status[data-state=done]", { timeout: 120_000 });
  await page.waitForFunction(() => document.querySelector("#plot").naturalWidth > 0);
  await page.locator("#scrub").fill("900");
  const at = await page.textContent("#signal-label");
  assert.match(at, /^5\d\.\d\d s · window \d+: \w+ \d/, at);
  await page.screenshot({ path: path.join(shots, "serve-signal.png"), fullPage: true });
  console.log(`signal: "${at.trim()}"`);

  assert.deepEqual(problems, [], "no script errors on the page");
  console.log("browser test: ok");
} finally {
  await browser.close();
}
