// Progressive enhancement of the survey's second page: a field marked
// data-shown-for="name=value" shows only while that choice is checked.
// Without scripts every field stays, its label saying when it applies.
"use strict";
document.querySelectorAll("[data-shown-for]").forEach((field) => {
  const [name, value] = field.dataset.shownFor.split("=");
  const choices = document.querySelectorAll(`input[name="${name}"]`);
  const update = () => {
    const chosen = document.querySelector(`input[name="${name}"]:checked`);
    field.hidden = !chosen || chosen.value !== value;
  };
  choices.forEach((choice) => choice.addEventListener("change", update));
  update();
});
