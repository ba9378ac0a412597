// Models: every stored version; activate, roll back or delete (each asked first); two versions
// compared on shared axes.
import * as api from "./api.js";
import { $, clear, el, lineChart, problemText, table } from "./dom.js";
import { differing, fixed4, plural, utc } from "./lib.js";
import { emit, on } from "./state.js";

let list = null;
let visible = false;
let asking = null; // the action waiting for its confirmation

const short = (text, n = 12) => (text ? `${text.slice(0, n)}…` : "");

// A change to what is served, or a deletion, is asked first; the answer stays on the page.
function ask(question, action, label) {
  asking = action;
  $("#models-question").textContent = question;
  $("#models-confirm-yes").textContent = label;
  $("#models-confirm").hidden = false;
  $("#models-confirm-yes").focus();
}

function answered(yes) {
  const action = asking;
  asking = null;
  $("#models-confirm").hidden = true;
  if (yes && action) action();
}

async function activate(version, verb) {
  const status = $("#models-status");
  try {
    await api.activate(version);
    status.textContent = `${verb}: version ${version} is now served.`;
    emit("serving", version);
    await refresh();
  } catch (error) {
    status.textContent = problemText(error);
  }
}

async function remove(version) {
  const status = $("#models-status");
  try {
    await api.deleteModel(version);
    status.textContent = `Version ${version} is deleted.`;
    await refresh();
  } catch (error) {
    status.textContent = problemText(error);
  }
}

function actions(m, rollBack) {
  if (m.active) return el("span", { class: "badge" }, "served");
  if (m.error) return el("span", { class: "error" }, m.error);
  const verb = rollBack ? "Roll back" : "Activate";
  return el("span", { class: "actions" },
    el("button", {
      type: "button", class: "secondary", "data-activate": m.version,
      "aria-label": `${verb} to ${m.version}`,
      onclick: () => ask(`${verb} to version ${m.version}? Every prediction that names no version will use it.`,
        () => activate(m.version, verb), verb),
    }, verb),
    el("button", {
      type: "button", class: "secondary danger", "data-delete": m.version,
      "aria-label": `Delete ${m.version}`,
      onclick: () => ask(`Delete version ${m.version}? Its weights and history are removed for good.`,
        () => remove(m.version), "Delete"),
    }, "Delete"));
}

// -- compare -----------------------------------------------------------------------------------

async function details(version) {
  const [meta, { history }, evaluation] = await Promise.all([
    api.model(version), api.history(version), api.evaluation(version),
  ]);
  return { version, meta, history, evaluation };
}

function confusion(d, name) {
  const classes = d.evaluation.classes;
  return el("figure", { class: "card confusion-card", "data-version": d.version },
    el("figcaption", {}, el("b", {}, `${name} `), el("span", { class: "mono" }, d.version),
      el("span", { class: "small" }, ` accuracy ${fixed4(d.evaluation.accuracy)}, loss ${fixed4(d.evaluation.loss)} on the shipped 150 flowers`)),
    el("div", { class: "scroll" }, el("table", { class: "data confusion" },
      el("thead", {}, el("tr", {}, el("th", {}, "true \\ predicted"), classes.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, d.evaluation.confusion_matrix.map((row, i) =>
        el("tr", {}, el("th", { scope: "row" }, classes[i]), row.map((n) => el("td", {}, String(n)))))))));
}

function overlay(a, b) {
  const series = (d, name, key, label, cls, dash) => ({
    label: `${name} ${label}`, cls, dash,
    points: d.history.filter((h) => h[key] !== null && h[key] !== undefined).map((h) => [h.epoch, h[key]]),
  });
  const both = (key, label) => [
    series(a, "A", `train_${key}`, "train", "a", null), series(a, "A", `validation_${key}`, "validation", "a", "5 4"),
    series(b, "B", `train_${key}`, "train", "b", null), series(b, "B", `validation_${key}`, "validation", "b", "5 4"),
  ];
  const loss = el("div", { class: "chart", id: "cmp-loss" });
  const accuracy = el("div", { class: "chart", id: "cmp-accuracy" });
  const ha = a.meta.hyperparameters || {}, hb = b.meta.hyperparameters || {};
  const differ = new Set(differing(ha, hb));
  const keys = [...new Set([...Object.keys(ha), ...Object.keys(hb)])].sort();
  const hp = el("table", { class: "data hp-compare" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "hyperparameter"), el("th", { scope: "col" }, "A"), el("th", { scope: "col" }, "B"))),
    el("tbody", {}, keys.map((k) => el("tr", { class: differ.has(k) ? "differs" : null, "data-key": k },
      el("th", { scope: "row" }, k), el("td", {}, String(ha[k] ?? "")), el("td", {}, String(hb[k] ?? ""))))));
  const body = [
    el("div", { class: "cols" },
      el("div", {}, el("h3", {}, "Loss"), loss),
      el("div", {}, el("h3", {}, "Accuracy"), accuracy)),
    el("h3", {}, "Hyperparameters ", el("span", { class: "muted small" }, differ.size ? `(${plural(differ.size, "difference")} marked)` : "(the same)")),
    el("div", { class: "scroll" }, hp),
    el("div", { class: "cols" }, confusion(a, "A"), confusion(b, "B")),
  ];
  clear($("#compare"), body);
  lineChart(loss, both("loss", "loss"), { yLabel: "loss" });
  lineChart(accuracy, both("accuracy", "accuracy"), { yLabel: "accuracy", yMin: 0, yMax: 1 });
}

let sequence = 0;

async function compare() {
  const mine = ++sequence;
  const [va, vb] = [$("#cmp-a").value, $("#cmp-b").value];
  if (!va || !vb || va === vb) {
    clear($("#compare"), el("p", { class: "muted" }, list && list.models.length < 2
      ? "Compare needs two stored versions."
      : "Choose two different versions."));
    return;
  }
  try {
    const [a, b] = await Promise.all([details(va), details(vb)]);
    if (mine === sequence) overlay(a, b); // a later choice is drawn, not this one
  } catch (error) {
    if (mine === sequence) clear($("#compare"), el("p", { class: "error" }, problemText(error)));
  }
}

// -- the list ----------------------------------------------------------------------------------

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
    {
      label: "version", value: (m) => el("span", {}, el("span", { class: "mono" }, m.version),
        el("br"), el("span", { class: "muted small" }, utc(m.created_at))),
    },
    { label: "hidden", value: (m) => m.hidden_units ?? "", num: true },
    { label: "val. acc.", value: (m) => fixed4(m.metrics?.validation_accuracy), num: true },
    { label: "train acc.", value: (m) => fixed4(m.metrics?.train_accuracy), num: true },
    { label: "note", value: (m) => m.note || "" },
    {
      label: "made by", value: (m) => el("span", { class: "small" },
        m.job_id ? el("a", { href: `/train/${encodeURIComponent(m.job_id)}`, class: "mono", title: `the job's record: ${m.job_id}` }, `job ${short(m.job_id, 8)}`) : null,
        m.job_id && m.data_sha256 ? el("br") : null,
        m.data_sha256 ? el("span", { class: "mono sha", title: `sha256 of the training data: ${m.data_sha256}`, "data-sha256": m.data_sha256 }, `data ${short(m.data_sha256, 8)}`) : null),
    },
    { label: "", value: (m) => actions(m, versions.indexOf(m.version) > currentAt) },
  ], list.models);
  $("#models-count").textContent = `${plural(list.models.length, "stored version")}; this server serves ${list.serving ?? "none"}.`;
  const keep = [$("#cmp-a").value, $("#cmp-b").value];
  const options = (selected) => versions.map((v) => el("option", { value: v, selected: v === selected }, v));
  const a = versions.includes(keep[0]) ? keep[0] : list.current;
  const b = versions.includes(keep[1]) && keep[1] !== a ? keep[1] : versions.find((v) => v !== a) || a;
  clear($("#cmp-a"), options(a));
  clear($("#cmp-b"), options(b));
  await compare();
}

export function setupModels() {
  $("#cmp-a").addEventListener("change", compare);
  $("#cmp-b").addEventListener("change", compare);
  $("#models-confirm-yes").addEventListener("click", () => answered(true));
  $("#models-confirm-no").addEventListener("click", () => answered(false));
  on("models-changed", refresh);
  on("reconnected", refresh);
}

export function showModels() {
  visible = true;
  return refresh();
}

export function hideModels() {
  visible = false;
}
