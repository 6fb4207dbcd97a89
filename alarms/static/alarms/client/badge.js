// The unread badge ({% alarms_badge %}: ids rendered into data-ids), kept
// live; null ids: no badge on this page.
export class Badges {
  constructor() {
    this.ids = null;
  }

  init(dismissedIds) {
    const nodes = document.querySelectorAll("[data-alarms-badge]");
    if (!nodes.length) {
      return;
    }
    const ids = new Set();
    for (const node of nodes) {
      for (const raw of (node.getAttribute("data-ids") || "").split(",")) {
        const id = parseInt(raw, 10);
        if (!isNaN(id) && !dismissedIds.has(id)) {
          ids.add(id);
        }
      }
    }
    this.ids = ids;
    this.render();
  }

  add(id) {
    if (this.ids && !this.ids.has(id)) {
      this.ids.add(id);
      this.render();
    }
  }

  remove(id) {
    if (this.ids && this.ids.delete(id)) {
      this.render();
    }
  }

  render() {
    const count = this.ids.size;
    const text = count > 99 ? "99+" : String(count);
    for (const node of document.querySelectorAll("[data-alarms-badge]")) {
      const counter = node.querySelector(".alarms-badge-count");
      if (counter) {
        counter.textContent = text;
      }
      node.setAttribute("data-count", String(count));
      node.classList.toggle("alarms-badge--empty", count === 0);
    }
  }
}

// Items of the alarm centre follow dismissals made in other tabs.
export function markItems(id) {
  for (const node of document.querySelectorAll('[data-alarms-item="' + id + '"]')) {
    node.classList.add("alarms-item--done");
  }
}
