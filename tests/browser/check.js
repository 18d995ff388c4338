// Opens a lineprof HTML report in headless Chromium and checks it against
// the JSON report of the same run (tests/browser.rs runs this).
//
//   node check.js REPORT.html REPORT.json SEARCH EXPECTED [SCREENSHOT.png]
//
// SEARCH is a function name to type into the flame graph's search box and
// EXPECTED the bytes the match must show (the JSON's total allocated bytes
// of that function's line). Prints one line per check; exits 1 on failure.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

const [htmlPath, jsonPath, search, expected, screenshot] = process.argv.slice(2);
const report = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
const totals = report.totals;
const failures = [];
const check = (ok, what) => {
  console.log((ok ? 'ok   ' : 'FAIL ') + what);
  if (!ok) failures.push(what);
};

(async () => {
  const profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lineprof-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--user-data-dir=${profileDir}`,
    ],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 1000 });
    const errors = [];
    const requests = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('request', (r) => { if (!r.url().startsWith('file:')) requests.push(r.url()); });
    await page.goto('file://' + path.resolve(htmlPath), { waitUntil: 'load' });

    // Markup in source text stays text: no injected script ran, and the
    // text is in a cell.
    const markup = await page.evaluate(() => ({
      injected: window.lineprofInjected,
      scripts: document.scripts.length,
      inCell: [...document.querySelectorAll('td.src')].some((td) => td.textContent.includes('<script>')),
    }));
    check(markup.injected === undefined && markup.scripts === 2 && markup.inCell,
      `<script> in source text stays text (${JSON.stringify(markup)})`);

    // Every sortable column of every table sorts, both ways.
    const sorting = await page.evaluate(() => {
      const bad = [];
      let columns = 0;
      const value = (cell, numeric) => {
        if (!cell) return numeric ? -Infinity : '';
        if (numeric) { const v = parseFloat(cell.dataset.v); return isNaN(v) ? -Infinity : v; }
        return cell.textContent;
      };
      document.querySelectorAll('table.sortable').forEach((table, t) => {
        [...table.tHead.rows[0].cells].forEach((th, col) => {
          columns++;
          const rows = () => [...table.tBodies[0].rows];
          const numeric = rows().some((r) => r.cells[col] && r.cells[col].dataset.v !== undefined);
          for (let round = 0; round < 2; round++) {
            th.click();
            const dir = Number(th.dataset.dir);
            const vals = rows().map((r) => value(r.cells[col], numeric));
            const sorted = vals.every((v, i) => i === 0 || (dir > 0 ? vals[i - 1] <= v : vals[i - 1] >= v));
            if (!dir || !sorted) bad.push(`table ${t} column ${col} (${th.textContent}) round ${round}`);
          }
        });
      });
      return { columns, bad };
    });
    check(sorting.columns > 0 && sorting.bad.length === 0,
      `${sorting.columns} sortable columns sort both ways${sorting.bad.length ? ': ' + sorting.bad.join(', ') : ''}`);

    // Every link inside the page has a target.
    const dangling = await page.evaluate(() =>
      [...document.querySelectorAll('a[href^="#"]')]
        .filter((a) => !document.getElementById(decodeURIComponent(a.getAttribute('href').slice(1))))
        .map((a) => a.getAttribute('href')));
    check(dangling.length === 0, `links to listings all land (${dangling.slice(0, 3).join(' ')})`);

    // A table filter hides the rows without the text.
    const filtered = await page.evaluate(() => {
      const input = document.querySelector('.only-all input.filter');
      input.value = 'zzzz-no-such-row';
      input.dispatchEvent(new Event('input'));
      const table = input.nextElementSibling;
      const shown = [...table.tBodies[0].rows].filter((r) => r.style.display !== 'none').length;
      input.value = '';
      input.dispatchEvent(new Event('input'));
      const back = [...table.tBodies[0].rows].filter((r) => r.style.display !== 'none').length;
      return { shown, back };
    });
    check(filtered.shown === 0 && filtered.back > 0, `table filter hides and restores rows (${JSON.stringify(filtered)})`);

    // The flame graph, all code: its root carries the JSON totals.
    await page.click('input[name="focus"][value="all"]');
    const metrics = [
      ['allocated_bytes', 0], ['peak_bytes', 1], ['allocations', 2], ['cpu_time_ns', 3],
    ];
    for (const [field, index] of metrics) {
      await page.select('#flame-metric', String(index));
      const flame = await page.evaluate(() => {
        const boxes = [...document.querySelectorAll('#flame .fg')];
        const root = boxes.find((b) => b.dataset.name === 'all');
        return { boxes: boxes.length, root: root ? Number(root.dataset.v) : null };
      });
      const want = totals[field];
      const ok = want === 0 ? flame.root === 0 : flame.root === want && flame.boxes > 1;
      check(ok, `flame graph by ${field}: root ${flame.root}, JSON ${want}, ${flame.boxes} frames`);
    }
    await page.select('#flame-metric', '0');

    // Click to zoom: the clicked frame spans the width, its callers stay.
    const zoom = await page.evaluate((name) => {
      const box = [...document.querySelectorAll('#flame .fg')].find((b) => b.dataset.name.includes(name));
      if (!box) return null;
      const v = box.dataset.v;
      box.click();
      const boxes = [...document.querySelectorAll('#flame .fg')];
      const same = boxes.find((b) => b.dataset.name === box.dataset.name && b.dataset.v === v);
      return same ? { width: same.getBoundingClientRect().width,
                      full: document.getElementById('flame').clientWidth } : { width: 0, full: 1 };
    }, search);
    check(zoom && Math.abs(zoom.width - zoom.full) <= 2, `click zooms a frame to full width (${JSON.stringify(zoom)})`);
    await page.click('#flame-reset');

    // Search finds the line, with its figure.
    await page.type('#flame-search', search);
    const found = await page.evaluate(() => ({
      matches: document.querySelectorAll('#flame .fg.match').length,
      v: Number(document.getElementById('flame-match').dataset.v),
      text: document.getElementById('flame-match').textContent,
    }));
    check(found.matches > 0 && found.v === Number(expected),
      `search "${search}" finds ${found.matches} frames, ${found.v} bytes (want ${expected}): ${found.text}`);
    await page.evaluate(() => {
      const s = document.getElementById('flame-search');
      s.value = '';
      s.dispatchEvent(new Event('input'));
    });

    // The timeline: its peak mark is the JSON's peak.
    const timeline = await page.evaluate(() => {
      const peak = document.getElementById('timeline-peak');
      const live = document.getElementById('timeline-live');
      return { peak: peak ? Number(peak.dataset.v) : null, path: live ? live.getAttribute('d').length : 0,
               text: peak ? peak.textContent : '' };
    });
    check(timeline.peak === totals.peak_bytes && timeline.path > 10,
      `timeline peak ${timeline.peak} = JSON peak ${totals.peak_bytes} (${timeline.text})`);

    // Back to your code: the user tables show, the others hide.
    await page.click('input[name="focus"][value="user"]');
    const focus = await page.evaluate(() => ({
      user: getComputedStyle(document.querySelector('.only-user')).display,
      all: getComputedStyle(document.querySelector('.only-all')).display,
    }));
    check(focus.user !== 'none' && focus.all === 'none', `your-code toggle (${JSON.stringify(focus)})`);

    check(errors.length === 0, `no console errors${errors.length ? ': ' + errors.join(' | ') : ''}`);
    check(requests.length === 0, `no network requests${requests.length ? ': ' + requests.join(' ') : ''}`);

    if (screenshot) {
      // A fresh page, as a reader first sees it (the checks sorted tables).
      await page.reload({ waitUntil: 'load' });
      await page.setViewport({ width: 1300, height: 1500 });
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: screenshot, fullPage: false });
      console.log('screenshot ' + screenshot);
    }
  } finally {
    await browser.close();
    fs.rmSync(profileDir, { recursive: true, force: true });
  }
  process.exit(failures.length ? 1 : 0);
})().catch((e) => {
  console.log('FAIL ' + (e && e.stack || e));
  process.exit(1);
});
