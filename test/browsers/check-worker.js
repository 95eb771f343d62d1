// The browser check inside a dedicated Worker (page.html?worker): the same check, posted back.
const base = self.location.pathname.startsWith('/isolated/') ? '/isolated' : '';
const { Kivi } = await import(`${base}/dist/index.js`);
const { runCheck } = await import(`${base}/check.js`);
self.postMessage(await runCheck(Kivi));
