// The page's script (page.py puts its settings in for __CONFIG__): language, cookies, head,
// Streamlit's widget texts in the chosen language, focus on a new answer.
(() => {
  const cfg = __CONFIG__;
  const doc = document;
  doc.documentElement.lang = cfg.lang;
  const year = 60 * 60 * 24 * 365;
  for (const [name, value] of Object.entries(cfg.cookies)) {
    doc.cookie = `${name}=${encodeURIComponent(value)}; max-age=${year}; path=/; SameSite=Lax`;
  }
  const head = doc.head;
  const ensure = (selector, make) => { if (!head.querySelector(selector)) head.append(make()); };
  const el = (tag, attrs) => Object.assign(doc.createElement(tag), attrs);
  ensure('link[rel="manifest"]', () => el("link", {rel: "manifest", href: cfg.static + "/manifest.json"}));
  ensure('meta[name="theme-color"]', () => el("meta", {name: "theme-color", content: cfg.theme}));
  ensure('link[rel="apple-touch-icon"]', () => el("link", {rel: "apple-touch-icon", href: cfg.static + "/icon-192.png"}));
  const fs = window.__fruitstream = window.__fruitstream || {};
  fs.cfg = cfg;
  fs.patterns = cfg.patterns.map(([pattern, into]) => [new RegExp(pattern), into]);
  if (fs.observer) { fs.apply(doc.body); return; }
  const original = new WeakMap();
  // ``element``: where the text is; the single-photo uploaders have texts of their own.
  const translate = (text, element) => {
    const c = fs.cfg;
    const trimmed = text.trim();
    if (!trimmed) return null;
    const single = element && element.closest(c.single_scope) ? c.single[trimmed] : undefined;
    if (single) return text.replace(trimmed, single);
    if (c.texts[trimmed]) return text.replace(trimmed, c.texts[trimmed]);
    for (const [re, into] of fs.patterns) {
      if (re.test(trimmed)) return text.replace(trimmed, trimmed.replace(re, into));
    }
    return null;
  };
  const skip = (node) => node.parentElement && node.parentElement.closest(
      '[data-testid="stIconMaterial"], script, style, .stMarkdown, [data-testid="stAlert"], .fs-guesses, [data-testid="stCode"]');
  const attrs = ["aria-label", "title", "placeholder"];
  fs.apply = (root) => {
    const walker = doc.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (skip(node)) continue;
      if (original.has(node) && node.data === original.get(node).shown) {
        const o = original.get(node);
        const want = translate(o.text, node.parentElement) ?? o.text;
        if (want !== node.data) { o.shown = want; node.data = want; }
        continue;
      }
      const done = translate(node.data, node.parentElement);
      if (done !== null && done !== node.data) {
        original.set(node, {text: node.data, shown: done});
        node.data = done;
      }
    }
    for (const element of root.querySelectorAll("[aria-label], [title], [placeholder]")) {
      for (const a of attrs) {
        const value = element.getAttribute(a);
        if (value === null) continue;
        const key = "fs" + a.replace(/-./g, m => m[1].toUpperCase());
        const base = element.dataset[key] !== undefined && element.dataset[key + "Shown"] === value
            ? element.dataset[key] : value;
        const want = translate(base, element) ?? base;
        element.dataset[key] = base;
        element.dataset[key + "Shown"] = want;
        if (want !== value) element.setAttribute(a, want);
      }
    }
    for (const answer of root.querySelectorAll('[class*="-answer"] [data-testid="stAlertContainer"]')) {
      if (answer.dataset.fsSeen) continue;
      answer.dataset.fsSeen = "1";
      answer.setAttribute("tabindex", "-1");
      answer.focus({preventScroll: true});
    }
  };
  fs.observer = new MutationObserver(() => {
    if (fs.pending) return;
    fs.pending = true;
    requestAnimationFrame(() => { fs.pending = false; fs.apply(doc.body); });
  });
  fs.observer.observe(doc.body, {childList: true, subtree: true, characterData: true,
                                 attributes: true, attributeFilter: attrs});
  fs.apply(doc.body);
})();
