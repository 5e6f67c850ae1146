// A menu button (the Manage menu): Enter, Space or Down opens it; arrows move; Escape closes.

import { h, newId } from "./dom.js";

/** A menu button: Enter, Space or Down opens it; arrows move; Escape closes it. */
export function manageMenu(items) {
  const menuId = newId("menu");
  const trigger = h("button", {
    type: "button",
    id: newId("menu-button"),
    "aria-haspopup": "menu",
    "aria-expanded": "false",
    "aria-controls": menuId,
  }, "Manage");
  const entries = items.map(([label, action]) =>
    h("button", {
      type: "button",
      role: "menuitem",
      tabindex: "-1",
      onclick: () => {
        close();
        action();
      },
    }, label),
  );
  const menu = h("div", { role: "menu", id: menuId, "aria-labelledby": trigger.id, hidden: true }, entries);
  const open = (index = 0) => {
    menu.hidden = false;
    trigger.setAttribute("aria-expanded", "true");
    entries[index].focus();
  };
  const close = (refocus = false) => {
    menu.hidden = true;
    trigger.setAttribute("aria-expanded", "false");
    if (refocus) trigger.focus();
  };
  trigger.addEventListener("click", () => (menu.hidden ? open() : close()));
  trigger.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      open(e.key === "ArrowDown" ? 0 : entries.length - 1);
    }
  });
  menu.addEventListener("keydown", (e) => {
    const at = entries.indexOf(document.activeElement);
    const move = { ArrowDown: 1, ArrowUp: -1 }[e.key];
    if (move) {
      e.preventDefault();
      entries[(at + move + entries.length) % entries.length].focus();
    } else if (e.key === "Home" || e.key === "End") {
      e.preventDefault();
      entries[e.key === "Home" ? 0 : entries.length - 1].focus();
    } else if (e.key === "Escape") {
      e.preventDefault();
      close(true);
    } else if (e.key === "Tab") {
      close();
    }
  });
  // A press on an item keeps the focus where it is: browsers that do not focus a clicked button
  // (Safari) would otherwise move it out of the menu, closing it before the click.
  menu.addEventListener("mousedown", (e) => e.preventDefault());
  menu.addEventListener("focusout", (e) => {
    if (!menu.contains(e.relatedTarget) && e.relatedTarget !== trigger) close();
  });
  return { root: h("div", { class: "menu" }, trigger, menu), button: trigger };
}
