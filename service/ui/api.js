// The public HTTP API, as the page calls it. Every request goes to this origin.
const TOKEN_KEY = "iris-api-token";

export class ApiError extends Error {
  constructor(status, problem, offline = false) {
    super(offline ? "the service cannot be reached" : (problem && (problem.detail || problem.error)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.offline = offline;
  }
}

// Whether the service answered the last call: the page shows a banner while it does not.
// A proxy's 502/504 without a problem document counts as unreachable too.
const watchers = [];
let reachable = true;
export const onReachable = (fn) => watchers.push(fn);
export const isReachable = () => reachable;
function reached(value) {
  if (value === reachable) return;
  reachable = value;
  for (const fn of watchers) fn(value);
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// JSON in, JSON out; a problem document becomes an ApiError. The token travels only in the
// Authorization header, and only for the calls that change something.
export async function api(path, { method = "GET", body, auth = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && getToken()) headers.Authorization = `Bearer ${getToken()}`;
  let response, data;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
    const type = response.headers.get("content-type") || "";
    const text = await response.text(); // read whole, even when empty (a 204)
    data = type.includes("json") && text ? JSON.parse(text) : null;
  } catch {
    reached(false); // the network failed, or the answer was cut: the browser's text says no more
    throw new ApiError(0, null, true);
  }
  if (!data && (response.status === 502 || response.status === 504)) {
    reached(false);
    throw new ApiError(response.status, null, true);
  }
  reached(true);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const predict = (instances) => api("/predict", { method: "POST", body: { instances } });
export const gradients = (instance, label) =>
  api("/gradients", {
    method: "POST",
    body: { instances: [instance], labels: [label], include: ["activations", "intermediates"] },
  });
export const models = () => api("/models");
export const model = (version) => api(`/models/${encodeURIComponent(version)}`);
export const history = (version) => api(`/models/${encodeURIComponent(version)}/history`);
export const parameters = (version) => api(`/models/${encodeURIComponent(version)}/parameters`);
export const evaluation = (version) => api(`/models/${encodeURIComponent(version)}/evaluation`);
export const regions = (version, query) =>
  api(`/models/${encodeURIComponent(version)}/regions?${new URLSearchParams(query)}`);
export const iris = () => api("/datasets/iris");
export const jobs = (limit = 10) => api(`/train?limit=${limit}`);
export const startJob = (body) => api("/train", { method: "POST", body, auth: true });
export const activate = (version) =>
  api(`/models/${encodeURIComponent(version)}/activate`, { method: "POST", auth: true });
export const deleteModel = (version) =>
  api(`/models/${encodeURIComponent(version)}`, { method: "DELETE", auth: true });
// One cheap authenticated call: 204 when the token is right, 401 otherwise.
export const checkToken = () => api("/auth", { auth: true });
export const health = () => api("/healthz");
// The one place that knows how a job is cancelled.
export const cancelJob = (jobId) =>
  api(`/train/${encodeURIComponent(jobId)}/cancel`, { method: "POST", auth: true });
export const jobEvents = (jobId) => new EventSource(`/train/${encodeURIComponent(jobId)}/events`);
export const openapi = () => api("/openapi.json");
export const limits = () => api("/limits");
// The rollout: the traffic split, its history, the per-version figures and the drift.
export const routing = () => api("/routing");
export const setRouting = (body) => api("/routing", { method: "PUT", body, auth: true });
export const routingHistory = (limit = 50) => api(`/routing/history?limit=${limit}`);
export const monitoring = () => api("/monitoring");
