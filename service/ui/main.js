// The dashboard's entry point: the token, the tabs, the served version.
import * as api from "./api.js";
import { $, problemText } from "./dom.js";
import { round } from "./lib.js";
import { hideData, setupData, showData } from "./data.js";
import { hideExplain, setupExplain, showExplain } from "./explain.js";
import { hideModels, setupModels, showModels } from "./models.js";
import { hideMonitor, setupMonitor, showMonitor } from "./monitor.js";
import { refreshPrediction, setupPredict } from "./predict.js";
import { emit, on, shared } from "./state.js";
import { setupTrain, showTrain } from "./train.js";

const PANELS = {
  predict: { show: () => {}, hide: () => {} },
  explain: { show: showExplain, hide: hideExplain },
  data: { show: showData, hide: hideData },
  train: { show: showTrain, hide: () => {} },
  models: { show: showModels, hide: hideModels },
  monitor: { show: showMonitor, hide: hideMonitor },
};
// While the service cannot be reached, the page asks again this often and recovers by itself.
const RETRY_MS = 2000;
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
  const say = (text) => { $("#token-state").textContent = text; };
  const state = () => say(api.getToken() ? "token kept for this tab" : "no token");
  $("#token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) return state();
    const before = api.getToken();
    api.setToken(token);
    say("checking the token…");
    try {
      await api.checkToken();
      $("#token").value = "";
      say("token accepted, kept for this tab");
    } catch (error) {
      if (error.status === 401) {
        api.setToken(before); // a wrong token is not kept
        say("wrong token: not kept");
      } else {
        $("#token").value = "";
        say(`token kept, not checked: ${problemText(error)}`);
      }
    }
  });
  $("#token-forget").addEventListener("click", () => { api.setToken(""); state(); });
  state();
}

function showServing(version) {
  shared.serving = version;
  $("#serving").textContent = version ? `Serving model ${version}` : "No model is served";
}

// The banner while the service cannot be reached: what is shown is marked stale, and the page
// asks again every RETRY_MS until an answer comes, then refreshes what it shows.
let retrying = 0;
function setupReachability() {
  api.onReachable((up) => {
    document.body.classList.toggle("stale", !up);
    const banner = $("#banner");
    if (!up) {
      banner.textContent = "The service cannot be reached. What this page shows may be out of date; it tries again every few seconds.";
      banner.hidden = false;
      if (shared.serving) $("#serving").textContent = `Last seen serving model ${shared.serving} (not reachable now)`;
      clearInterval(retrying);
      retrying = setInterval(() => api.models().catch(() => {}), RETRY_MS);
    } else {
      banner.hidden = true;
      banner.textContent = "";
      clearInterval(retrying);
      showServing(shared.serving);
      emit("reconnected");
      // whichever call answered first, the served version is asked again and every panel
      // that shows it redraws
      api.models().then((m) => {
        shared.settleUntil = 0;
        emit("serving", m.serving);
      }).catch(() => {});
    }
  });
}

async function load() {
  try {
    const [iris, models] = await Promise.all([api.iris(), api.models()]);
    return { iris, models };
  } catch (error) {
    $("#serving").textContent = problemText(error);
    if (!error.offline && error.status < 500) return null; // a refusal: asking again won't help
    // not up yet, or its store is not: try again until it answers
    await new Promise((resolve) => { setTimeout(resolve, RETRY_MS); });
    return load();
  }
}

async function start() {
  setupToken();
  setupTabs();
  setupReachability();
  const loaded = await load();
  if (!loaded) return;
  const { iris, models } = loaded;
  shared.iris = iris;
  shared.features = iris.features;
  shared.classes = iris.classes;
  shared.flower = Object.fromEntries(iris.features.map((f) => [f, round(iris.summary[f].mean, 2)]));
  showServing(models.serving);
  on("serving", (version) => {
    showServing(version);
    shared.settleUntil = Date.now() + SETTLE_MS;
    refreshPrediction();
  });
  setupPredict(iris);
  setupExplain();
  setupData();
  setupTrain();
  setupModels();
  setupMonitor();
  select(location.hash.slice(1) || "predict");
}

start();
