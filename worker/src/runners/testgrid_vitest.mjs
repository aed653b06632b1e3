// testgrid's warm vitest runner: one vitest instance, fed test files on demand.
//
// The worker starts `node testgrid_vitest.mjs` per slot in the project root and talks to it over
// the Unix socket named by TESTGRID_RUNNER_SOCKET, never over stdout (the tests own it). One JSON
// object per line each way; the protocol is the pytest runner's (docs/runners.md):
//
// worker -> runner:  {"op": "run", "unit": N, "path": "src/a.test.ts"}  or  "src/a.test.ts::a > b"
//                    {"op": "stop"}  (or EOF)
// runner -> worker:  {"op": "ready", "pid": P}
//                    {"op": "collected", "unit": N, "tests": ["src/a.test.ts::a > b", ...]}
//                    {"op": "started", "unit": N, "test": ID}
//                    {"op": "case", "unit": N, "test": ID, "outcome": O, "phase": "call",
//                     "duration_ms": D, "message": M, "output": OUT, "xfail": false}
//                    {"op": "done", "unit": N, "error": null | TEXT}
//
// vitest is the project's own (resolved from the working directory), driven through its Node API
// (`createVitest` from `vitest/node`, `runTestSpecifications`) with a reporter object of ours:
// vitest 3.x, 4.x and 5.x. The config file found from the working directory applies; we force
// watch off, one test worker (no file parallelism) and our reporter only. Each file still runs
// isolated the way vitest isolates files (a fresh fork by default).
//
// A test ID is "FILE::a > b > c": FILE as given in the run message, then the describe titles and
// the test title joined with " > " (vitest's own fullName). Skipped and todo tests are "skipped".
// A file that fails to load (syntax or import error, a throwing describe block), a failing
// beforeAll/afterAll, and errors vitest could not pin on a test (unhandled rejections) end the
// file with "error".

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import common from './testgrid_runner_common.cjs';

const { OUTPUT_LIMIT, MESSAGE_LIMIT, cap, plain, escapeRegExp, Channel } = common;
const { resolveFromProject, splitUnitPath, socketPathOrExit, serve } = common;

const log = (...args) => process.stderr.write(`[testgrid-vitest] ${args.join(' ')}\n`);

// ---------------------------------------------------------------------------------------------
// Formatting vitest's errors.

function errorText(error) {
  if (!error) return '';
  if (typeof error !== 'object') return plain(error);
  const head = `${error.name || 'Error'}: ${error.message ?? ''}`;
  const stack = plain(error.stack || error.stackStr || '');
  let text = stack.includes(plain(error.message ?? '')) && stack ? stack : stack ? `${head}\n${stack}` : head;
  // Vite's transform errors say where: the plugin, the file and line, a code frame.
  const vite = error.__vitest_rollup_error__ ?? error;
  const where = [];
  if (vite.plugin) where.push(`Plugin: ${vite.plugin}`);
  if (vite.loc?.file || vite.id) {
    const loc = vite.loc;
    where.push(`File: ${loc?.file || vite.id}${loc?.line != null ? `:${loc.line}:${loc.column ?? 0}` : ''}`);
  }
  if (vite.frame) where.push(plain(vite.frame));
  if (where.length) text = `${text.split('\n')[0]}\n${where.join('\n')}\n${text.split('\n').slice(1).join('\n')}`;
  if (error.diff) text += `\n\n${plain(error.diff)}`;
  if (error.cause) text += `\n\nCaused by: ${errorText(error.cause)}`;
  return plain(text);
}

function firstLines(error) {
  if (!error) return 'failed';
  const message = plain(typeof error === 'object' ? error.message ?? error.name : error).trim();
  const lines = message.split('\n').slice(0, 10).join('\n');
  const text = lines || plain(error.name || 'failed');
  return text.length > MESSAGE_LIMIT ? text.slice(0, MESSAGE_LIMIT) + '...' : text;
}

// ---------------------------------------------------------------------------------------------
// The current file's state, shared by the reporter and the run loop.

class Unit {
  constructor(unit, file, caseName, channel) {
    this.unit = unit;
    this.absPath = path.resolve(process.cwd(), file);
    let real = this.absPath;
    try {
      real = fs.realpathSync(this.absPath);
    } catch {
      // a file that does not exist: vitest says so
    }
    this.moduleIds = new Set([this.absPath, real]);
    this.file = file; // the path as given, the prefix of every test ID
    this.caseName = caseName; // only this test, when the path was FILE::CASE
    this.channel = channel;
    this.collected = false;
    this.started = new Set(); // vitest test ids
    this.reported = new Set(); // vitest test ids
    this.logs = new Map(); // vitest test id -> console text
    this.errors = []; // file-level error texts
  }

  /** vitest's state keeps earlier files' modules: only this file's count. */
  owns(module) {
    return module != null && this.moduleIds.has(module.moduleId);
  }

  idOf(testCase) {
    return `${this.file}::${testCase.fullName}`;
  }

  wanted(testCase) {
    return this.caseName === null || testCase.fullName === this.caseName;
  }
}

let current = null;

function allTests(module) {
  return Array.from(module.children.allTests());
}

function collect(module) {
  const unit = current;
  if (!unit || unit.collected || !unit.owns(module)) return;
  unit.collected = true;
  const tests = allTests(module).filter((t) => unit.wanted(t)).map((t) => unit.idOf(t));
  unit.channel.send({ op: 'collected', unit: unit.unit, tests });
}

function reportCase(testCase) {
  const unit = current;
  if (!unit || unit.reported.has(testCase.id) || !unit.owns(testCase.module) || !unit.wanted(testCase)) return;
  const result = testCase.result();
  if (result.state === 'pending') return;
  unit.reported.add(testCase.id);
  let outcome = 'passed';
  let message = '';
  const output = [];
  if (result.state === 'failed') {
    outcome = 'failed';
    const errors = result.errors ?? [];
    message = firstLines(errors[0]);
    for (const error of errors) output.push(errorText(error));
  } else if (result.state === 'skipped') {
    outcome = 'skipped';
    const mode = testCase.options?.mode;
    message = result.note || (mode === 'todo' ? 'todo' : 'skipped');
  }
  const logs = unit.logs.get(testCase.id);
  if (logs) output.push(`----- console -----\n${logs}`);
  const duration = testCase.diagnostic()?.duration ?? 0;
  unit.channel.send({
    op: 'case',
    unit: unit.unit,
    test: unit.idOf(testCase),
    outcome,
    phase: 'call',
    duration_ms: Math.max(0, Math.round(duration || 0)),
    message: cap(message, MESSAGE_LIMIT * 2),
    output: cap(output.join('\n\n')),
    xfail: false,
  });
}

/** Errors of the module and its suites: collection errors, failing beforeAll/afterAll. */
function suiteErrors(module) {
  const texts = [];
  const visit = (suite, name) => {
    for (const error of suite.errors?.() ?? []) {
      texts.push(name ? `in "${name}": ${errorText(error)}` : errorText(error));
    }
    for (const child of suite.children.suites()) visit(child, child.fullName);
  };
  visit(module, '');
  return texts;
}

const reporter = {
  onTestModuleCollected(module) {
    collect(module);
  },
  onTestCaseReady(testCase) {
    const unit = current;
    if (!unit || unit.started.has(testCase.id) || !unit.owns(testCase.module) || !unit.wanted(testCase)) return;
    unit.started.add(testCase.id);
    unit.channel.send({ op: 'started', unit: unit.unit, test: unit.idOf(testCase) });
  },
  onTestCaseResult(testCase) {
    reportCase(testCase);
  },
  onUserConsoleLog(entry) {
    const unit = current;
    if (!unit) return;
    const key = entry.taskId ?? '';
    const text = (unit.logs.get(key) ?? '') + `${entry.type}: ${plain(entry.content)}`;
    // Keep the head and the tail of a chatty test's console.
    unit.logs.set(key, text.length > OUTPUT_LIMIT * 2 ? cap(text, OUTPUT_LIMIT) : text);
  },
  onTestModuleEnd(module) {
    finishModule(module);
  },
  onTestRunEnd(modules, unhandledErrors) {
    const unit = current;
    if (!unit) return;
    for (const module of modules ?? []) finishModule(module);
    for (const error of unhandledErrors ?? []) unit.errors.push(unhandledText(error));
  },
};

/** An error vitest could not pin on a test (it fails the run): an unhandled rejection, say. */
function unhandledText(error) {
  const kind = error?.type || 'Unhandled error';
  const during = error?.VITEST_TEST_NAME ? ` during "${error.VITEST_TEST_NAME}"` : '';
  return `${kind}${during}: ${errorText(error)}`;
}

function finishModule(module) {
  const unit = current;
  if (!unit || !unit.owns(module)) return;
  collect(module);
  for (const testCase of allTests(module)) reportCase(testCase);
  if (!unit.moduleErrorsTaken) {
    unit.moduleErrorsTaken = true;
    unit.errors.push(...suiteErrors(module));
  }
}

// ---------------------------------------------------------------------------------------------
// vitest itself.

async function loadVitest() {
  const { require, entry } = resolveFromProject('vitest/node', 'vitest');
  const api = await import(pathToFileURL(entry).href);
  let version = api.version;
  if (!version) {
    try {
      version = require('vitest/package.json').version;
    } catch {
      version = '0';
    }
  }
  return { api, version };
}

async function startVitest() {
  const { api, version } = await loadVitest();
  const major = parseInt(version, 10);
  const options = {
    watch: false,
    run: true,
    reporters: [reporter],
    // One runner is one slot: one test worker, files one at a time.
    fileParallelism: false,
    maxWorkers: 1,
    ...(major < 4 ? { minWorkers: 1 } : {}),
    passWithNoTests: true,
    // Files are chosen by the worker; never let vitest open a browser UI or an API server.
    ui: false,
    open: false,
    api: false,
  };
  const vitest = major >= 5 ? await api.createVitest(options) : await api.createVitest('test', options);
  log(`vitest ${version} ready in ${process.cwd()}`);
  return { vitest, version, major };
}

function projectFor(vitest, absPath) {
  const projects = vitest.projects ?? [];
  for (const project of projects) {
    try {
      if (project.matchesTestGlob?.(absPath)) return project;
    } catch {
      // a project that cannot tell: try the next
    }
  }
  return vitest.getRootProject?.() ?? projects[0];
}

async function runFile(state, channel, message) {
  const { vitest, major } = state;
  const { file, caseName } = splitUnitPath(message);
  const unit = new Unit(message.unit, file, caseName, channel);
  current = unit;
  try {
    const absPath = unit.absPath;
    const project = projectFor(vitest, absPath);
    let options;
    // vitest 5 matches exact full names; before it, a pattern sees the titles joined by " ";
    // vitest 3 takes the pattern for the whole run only.
    const pattern = caseName === null ? null : new RegExp(`^${escapeRegExp(caseName.split(' > ').join(' '))}$`);
    if (caseName !== null && major >= 5) options = { testNames: [caseName] };
    else if (caseName !== null && major === 4) options = { testNamePattern: pattern };
    else if (major < 4 && pattern) vitest.setGlobalTestNamePattern(pattern);
    else if (major < 4) vitest.resetGlobalTestNamePattern?.();
    const specification = project.createSpecification(absPath, options);
    const result = await vitest.runTestSpecifications([specification], false);
    for (const module of result?.testModules ?? []) finishModule(module);
    for (const error of result?.unhandledErrors ?? []) unit.errors.push(unhandledText(error));
  } catch (e) {
    unit.errors.push(`the testgrid runner could not run ${file}: ${errorText(e)}`);
  } finally {
    current = null;
  }
  if (caseName !== null && unit.reported.size === 0 && unit.errors.length === 0) {
    unit.errors.push(`no test named "${caseName}" in ${file}`);
  }
  const errors = [...new Set(unit.errors)];
  // Console output from outside any test (module level, beforeAll) explains a file's error.
  const loose = [...unit.logs].filter(([key]) => !unit.reported.has(key)).map(([, text]) => text);
  if (errors.length && loose.length) errors.push(`----- console -----\n${loose.join('')}`);
  channel.send({ op: 'done', unit: unit.unit, error: errors.length ? cap(errors.join('\n\n')) : null });
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const socketPath = socketPathOrExit(log);
  // Whatever a test leaves behind must not kill the runner.
  process.on('unhandledRejection', (reason) => {
    log('unhandled rejection:', errorText(reason));
    if (current) current.errors.push(`Unhandled rejection: ${errorText(reason)}`);
  });
  process.on('uncaughtException', (error) => {
    log('uncaught exception:', errorText(error));
    if (current) current.errors.push(`Uncaught exception: ${errorText(error)}`);
  });
  const channel = new Channel(socketPath, log);
  await channel.connected();
  const state = await startVitest();
  channel.send({ op: 'ready', pid: process.pid });
  await serve(channel, (message) => runFile(state, channel, message));
  // Close vitest (its pool, coverage, vite server); never hang on it.
  const closing = state.vitest.close().catch((e) => log('closing vitest failed:', errorText(e)));
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 20000).unref())]);
  channel.socket.end();
  process.exit(0);
}

main().catch((e) => {
  log('fatal:', errorText(e));
  process.exit(1);
});
