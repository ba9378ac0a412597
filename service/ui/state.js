// What the panels share: the current flower, the served version, the shipped data.
const listeners = new Map();

export const shared = {
  flower: {}, // the data set's means to start with (main.js)
  flowerValid: true,
  serving: null,
  settleUntil: 0, // until then, a prediction from another version is retried, not reported
  iris: null, // GET /datasets/iris: the one source of the features, classes and their order
  features: [],
  classes: [],
  job: null, // the job the Train panel follows, if any
};

export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, []);
  listeners.get(event).push(fn);
}

export function emit(event, value) {
  for (const fn of listeners.get(event) || []) fn(value);
}
