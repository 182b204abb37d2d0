// One hover card, fixed to the viewport so that no ancestor's `overflow` clips it: placed below its token,
// flipped above it near the window's bottom, kept inside the window. Shared by the notebook explorer
// (moe_edu/course/widgets/view.py puts it before explorer_view.js) and the website's (site_explorer.py puts
// it before site_explorer.js).
function placeFloatCard(card, tok) {
  const r = tok.getBoundingClientRect(), c = card.getBoundingClientRect();
  const vw = document.documentElement.clientWidth, vh = document.documentElement.clientHeight;
  let top = r.bottom + 4;
  if (top + c.height > vh - 4 && r.top - c.height - 4 >= 4) top = r.top - c.height - 4;  // flip above
  top = Math.max(4, Math.min(top, vh - c.height - 4));
  const left = Math.max(4, Math.min(r.left, vw - c.width - 4));
  card.style.top = `${Math.round(top)}px`;
  card.style.left = `${Math.round(left)}px`;
}
