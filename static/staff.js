// Progressive enhancement of the staff pages: on a phone, a <details
// data-fold-on-phone> (the queue's filters, its bulk bar) starts folded, so
// the list comes first; on a wide screen (or turned to one) it is open, its
// summary hidden. Without scripts it stays open everywhere.
"use strict";
const phone = window.matchMedia("(max-width: 48rem)");
const fold = (folded) => {
  document.querySelectorAll("details[data-fold-on-phone]").forEach((details) => {
    details.open = !folded;
  });
};
if (phone.matches) fold(true);
phone.addEventListener("change", (event) => {
  if (!event.matches) fold(false);
});
