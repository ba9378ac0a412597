// The dashboard's entry point: the token, the tabs, the served version.
import * as api from "./api.js";
import { $, problemText } from "./dom.js";
import { hideData, setupData, showData } from "./data.js";
import { hideExplain, setupExplain, showExplain } from "./explain.js";
import { hideModels, setupModels, showModels } from "./models.js";
import { refreshPrediction, setupPredict } from "./predict.js";
import { on, shared } from "./state.js";
import { setupTrain, showTrain } from "./train.js";

const PANELS = {
  predict: { show: () => {}, hide: () => {} },
  explain: { show: showExplain, hide: hideExplain },
  data: { show: showData, hide: hideData },
  train: { show: showTrain, hide: () => {} },
  models: { show: showModels, hide: hideModels },
};
// After an activation, a server worker may answer with the version before it for up to its
// poll interval (IRIS_MODEL_POLL_SECONDS); predictions retry meanwhile instead of reporting it.
const SETTLE_MS = 5000;
const tabs = () => [...document.querySelectorAll("[role=tab]")];
// Panels are named in the URL's fragment (#train); their elements are #train-panel, so a
// fragment never scrolls to or focuses a panel by itself.
const panelName = (tab) => tab.getAttribute("aria-controls").replace(/-panel$/, "");

function select(name, focus = false) {
  if (!(name in PANELS)) name = "predict";
  for (const tab of tabs()) {
    const mine = panelName(tab) === name;
    tab.setAttribute("aria-selected", String(mine));
    tab.tabIndex = mine ? 0 : -1;
    if (mine && focus) tab.focus();
    const panel = document.getElementById(tab.getAttribute("aria-controls"));
    if (!mine && !panel.hidden) PANELS[panelName(tab)].hide();
    panel.hidden = !mine;
  }
  history.replaceState(null, "", `#${name}`);
  PANELS[name].show();
}

function setupTabs() {
  for (const tab of tabs()) {
    tab.addEventListener("click", () => select(panelName(tab)));
    tab.addEventListener("keydown", (event) => {
      const all = tabs();
      const at = all.indexOf(tab);
      const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: all.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      select(panelName(all[(to + all.length) % all.length]), true);
    });
  }
  window.addEventListener("hashchange", () => select(location.hash.slice(1)));
}

function setupToken() {
  const state = () => { $("#token-state").textContent = api.getToken() ? "token kept for this tab" : "no token"; };
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    api.setToken($("#token").value.trim());
    $("#token").value = "";
    state();
  });
  $("#token-forget").addEventListener("click", () => { api.setToken(""); state(); });
  state();
}

function showServing(version) {
  shared.serving = version;
  $("#serving").textContent = version ? `Serving model ${version}` : "No model is served";
}

async function start() {
  setupToken();
  setupTabs();
  on("serving", (version) => {
    showServing(version);
    shared.settleUntil = Date.now() + SETTLE_MS;
    refreshPrediction();
  });
  try {
    const [iris, models] = await Promise.all([api.iris(), api.models()]);
    shared.iris = iris;
    showServing(models.serving);
    setupPredict(iris);
  } catch (error) {
    $("#serving").textContent = problemText(error);
    return;
  }
  setupExplain();
  setupData();
  setupTrain();
  setupModels();
  select(location.hash.slice(1) || "predict");
}

start();
