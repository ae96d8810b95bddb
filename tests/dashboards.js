// What TensorBoard's dashboards show, read from the page (tests/test_board.py calls these in
// headless Chromium). Its Polymer elements draw into shadow roots: `deep` looks inside them.

const deep = (root, sel) => [
  ...root.querySelectorAll(sel),
  ...[...root.querySelectorAll("*")].filter((e) => e.shadowRoot).flatMap((e) => deep(e.shadowRoot, sel)),
];

// Each custom-scalars chart, by its title, with the runs that draw a line in it. A run is
// known by its colour in the run selector; a line is a path through two points or more.
function chartRuns() {
  const runs = Object.fromEntries(
    deep(document, 'paper-checkbox[id^="checkbox-"]').map((box) => [
      getComputedStyle(box.shadowRoot.querySelector("#checkbox")).backgroundColor,
      box.id.slice("checkbox-".length),
    ]),
  );
  const cards = deep(document, "tf-custom-scalar-multi-line-chart-card, tf-custom-scalar-margin-chart-card");
  return Object.fromEntries(
    cards.map((card) => {
      const title = deep(card.shadowRoot, ".heading-label").map((e) => e.innerText.trim()).join();
      const lines = deep(card.shadowRoot, "path.line").filter((p) => (p.getAttribute("d") || "").includes("L"));
      const colors = new Set(lines.map((p) => getComputedStyle(p).stroke));
      return [title, [...colors].map((c) => runs[c]).filter(Boolean).sort()];
    }),
  );
}

// The HPARAMS table: a row per run, by its `agent` cell, with the cells of `columns`. Columns
// not shown yet are ticked first in the left pane, as a user does (five are shown at first).
function hparamsRows(columns) {
  for (const box of deep(document, "paper-checkbox.hparam-checkbox")) {
    if (columns.includes(box.innerText.trim()) && !box.checked) box.click();
  }
  const grid = deep(document, "vaadin-grid")[0];
  if (!grid) return {};
  const text = (cell) => (cell.querySelector("slot")?.assignedNodes() ?? []).map((n) => n.innerText ?? n.textContent).join("").trim();
  const [head, ...rows] = [...grid.shadowRoot.querySelectorAll("tr")].map((tr) => [...tr.querySelectorAll("th, td")].map(text));
  const cell = (row, name) => (head.includes(name) ? row[head.indexOf(name)] : null);
  return Object.fromEntries(
    rows.filter((row) => cell(row, "agent")).map((row) => [cell(row, "agent"), Object.fromEntries(columns.map((c) => [c, cell(row, c)]))]),
  );
}
