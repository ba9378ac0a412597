// Models: every stored version, activate or roll back, two versions side by side.
import * as api from "./api.js";
import { $, clear, el, lineChart, problemText, table } from "./dom.js";
import { emit, on } from "./state.js";

let list = null;
let visible = false;

const short = (v) => (typeof v === "number" ? v.toFixed(4) : "");

async function activate(version) {
  const status = $("#models-status");
  try {
    await api.activate(version);
    status.textContent = `Version ${version} is now served.`;
    emit("serving", version);
    await refresh();
  } catch (error) {
    status.textContent = problemText(error);
  }
}

async function column(version) {
  const [meta, { history }, evaluation] = await Promise.all([
    api.model(version), api.history(version), api.evaluation(version),
  ]);
  const loss = el("div", { class: "chart" });
  const accuracy = el("div", { class: "chart" });
  const series = (key, label, cls) => ({ label, cls, points: history.filter((h) => h[key] !== null && h[key] !== undefined).map((h) => [h.epoch, h[key]]) });
  lineChart(loss, [series("train_loss", "train", "train"), series("validation_loss", "validation", "val")], { yLabel: "loss" });
  lineChart(accuracy, [series("train_accuracy", "train", "train"), series("validation_accuracy", "validation", "val")], { yLabel: "accuracy", yMin: 0, yMax: 1 });
  const classes = evaluation.classes;
  const confusion = el("table", { class: "data confusion" },
    el("thead", {}, el("tr", {}, el("th", {}, "true \\ predicted"), classes.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, evaluation.confusion_matrix.map((row, i) =>
      el("tr", {}, el("th", { scope: "row" }, classes[i]), row.map((n) => el("td", {}, String(n)))))));
  const hp = meta.hyperparameters || {};
  return el("div", { class: "card", "data-version": version },
    el("h3", { class: "mono" }, version),
    el("p", { class: "small" }, `On the shipped Iris data: accuracy ${(100 * evaluation.accuracy).toFixed(1)} %, loss ${evaluation.loss.toFixed(4)}`),
    el("h3", {}, "Loss"), loss,
    el("h3", {}, "Accuracy"), accuracy,
    el("h3", {}, "Confusion matrix (150 flowers)"), el("div", { class: "scroll" }, confusion),
    el("h3", {}, "Hyperparameters"),
    el("dl", { class: "hp" }, Object.entries(hp).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])));
}

async function compare() {
  const versions = [$("#cmp-a").value, $("#cmp-b").value].filter(Boolean);
  try {
    clear($("#compare"), await Promise.all(versions.map(column)));
  } catch (error) {
    clear($("#compare"), el("p", { class: "error" }, problemText(error)));
  }
}

export async function refresh() {
  if (!visible) return;
  try {
    list = await api.models();
  } catch (error) {
    $("#models-status").textContent = problemText(error);
    return;
  }
  const versions = list.models.map((m) => m.version);
  const currentAt = versions.indexOf(list.current);
  table($("#model-table"), [
    { label: "version", value: (m) => el("span", { class: "mono" }, m.version) },
    { label: "", value: (m) => (m.active ? el("span", { class: "badge" }, "current") : "") },
    { label: "created", value: (m) => (m.created_at || "").replace("T", " ").slice(0, 19) },
    { label: "hidden", value: (m) => m.hidden_units ?? "", num: true },
    { label: "train acc.", value: (m) => short(m.metrics?.train_accuracy), num: true },
    { label: "val. acc.", value: (m) => short(m.metrics?.validation_accuracy), num: true },
    { label: "train loss", value: (m) => short(m.metrics?.train_loss), num: true },
    { label: "", value: (m, i = versions.indexOf(m.version)) => m.active || m.error ? (m.error || "") : el("button", {
      type: "button", class: "secondary", "data-activate": m.version,
      "aria-label": `${i > currentAt ? "Roll back to" : "Activate"} ${m.version}`,
      onclick: () => activate(m.version),
    }, i > currentAt ? "Roll back" : "Activate") },
  ], list.models);
  $("#models-status").textContent = `${list.models.length} stored versions; this server serves ${list.serving}.`;
  const keep = [$("#cmp-a").value, $("#cmp-b").value];
  const options = (selected) => versions.map((v) => el("option", { value: v, selected: v === selected }, v));
  const a = versions.includes(keep[0]) ? keep[0] : list.current;
  const b = versions.includes(keep[1]) ? keep[1] : versions.find((v) => v !== a) || a;
  clear($("#cmp-a"), options(a));
  clear($("#cmp-b"), options(b));
  await compare();
}

export function setupModels() {
  $("#cmp-a").addEventListener("change", compare);
  $("#cmp-b").addEventListener("change", compare);
  on("models-changed", refresh);
}

export function showModels() {
  visible = true;
  return refresh();
}

export function hideModels() {
  visible = false;
}
