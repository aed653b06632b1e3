// testgrid's warm jest runner: one node process per slot, fed test files on demand.
//
// The worker starts `node testgrid_jest.cjs` per slot in the project root and talks to it over
// the Unix socket named by TESTGRID_RUNNER_SOCKET, never over stdout (the tests own it). One JSON
// object per line each way; the protocol is the pytest runner's (docs/runners.md):
//
// worker -> runner:  {"op": "run", "unit": N, "path": "src/a.test.js"}  or  "src/a.test.js::a > b"
//                    {"op": "stop"}  (or EOF)
// runner -> worker:  {"op": "ready", "pid": P}
//                    {"op": "started", "unit": N, "test": ID}
//                    {"op": "case", "unit": N, "test": ID, "outcome": O, "phase": "call",
//                     "duration_ms": D, "message": M, "output": OUT, "xfail": false}
//                    {"op": "collected", "unit": N, "tests": [IDs]}   (jest collects while it runs:
//                                                                      sent when the file ends)
//                    {"op": "done", "unit": N, "error": null | TEXT}
//
// jest is the project's own (resolved from the working directory). Each file is one `runCLI`
// call with runInBand (the tests run inside this process, one file at a time, each in its own
// module registry and vm context as jest always does), runTestsByPath, ci, and this file as the
// only reporter (onTestCaseStart and onTestCaseResult stream the cases). What stays warm is
// node and jest's own modules; jest still reads the config and builds its file map per call
// (from its on-disk cache).
//
// A test ID is "FILE::a > b > c": FILE as given in the run message, then the describe titles and
// the test title joined with " > ". Skipped, disabled and todo tests are "skipped". A file that
// fails to run (syntax or import error, a throwing describe block, a failing beforeAll) ends with
// "error". A test that calls process.exit fails instead of ending the runner.
'use strict';

const path = require('node:path');

const common = require('./testgrid_runner_common.cjs');

const { OUTPUT_LIMIT, MESSAGE_LIMIT, cap, plain, escapeRegExp, Channel } = common;
const { resolveFromProject, splitUnitPath, socketPathOrExit, serve } = common;

const log = (...args) => process.stderr.write(`[testgrid-jest] ${args.join(' ')}\n`);

function errorText(error) {
  if (error == null) return '';
  if (typeof error !== 'object') return plain(error);
  const stack = plain(error.stack || '');
  const head = `${error.name || 'Error'}: ${plain(error.message ?? '')}`;
  return stack && stack.includes(plain(error.message ?? '')) ? stack : stack ? `${head}\n${stack}` : head;
}

/** The assertion message of a jest failure text: what comes before its stack. */
function firstLines(text) {
  const lines = plain(text).split('\n');
  const end = lines.findIndex((line) => /^\s+at /.test(line));
  const head = (end >= 0 ? lines.slice(0, end) : lines)
    .join('\n')
    .trim()
    .split('\n')
    .slice(0, 12)
    .join('\n')
    .trim();
  const message = head || 'failed';
  return message.length > MESSAGE_LIMIT ? message.slice(0, MESSAGE_LIMIT) + '...' : message;
}

/** jest's "● Test suite failed to run" text, the error first (its header dropped, dedented). */
function suiteFailure(text) {
  const lines = plain(text).replace(/^\s*\n/, '').split('\n');
  if (lines.length > 1 && /^\s*● Test suite failed to run\s*$/.test(lines[0])) {
    lines.shift();
    while (lines.length && !lines[0].trim()) lines.shift();
    return lines.map((line) => line.replace(/^ {4}/, '')).join('\n').trim();
  }
  return lines.join('\n').trim();
}

// ---------------------------------------------------------------------------------------------
// The current file, shared by the reporter (which jest loads from this very file) and the loop.

class Unit {
  constructor(unit, file, caseName, channel) {
    this.unit = unit;
    this.file = file;
    this.caseName = caseName;
    this.channel = channel;
    this.absPath = path.resolve(process.cwd(), file);
    this.sent = new Map(); // test id -> cases sent (names may repeat)
    this.errors = []; // file-level error texts
    this.console = ''; // the file's console output (jest keeps it per file, not per test)
    this.held = []; // failed cases, sent with the file's console output once the file ends
  }

  nameOf(result) {
    return [...(result.ancestorTitles ?? []), result.title].join(' > ');
  }

  wanted(result) {
    return this.caseName === null || this.nameOf(result) === this.caseName;
  }

  idOf(result) {
    return `${this.file}::${this.nameOf(result)}`;
  }

  sendCase(result, counted = false) {
    if (!this.wanted(result)) return;
    const id = this.idOf(result);
    if (!counted) this.sent.set(id, (this.sent.get(id) ?? 0) + 1);
    let outcome;
    let message = '';
    const output = [];
    switch (result.status) {
      case 'passed':
      case 'focused':
        outcome = 'passed';
        break;
      case 'failed': {
        outcome = 'failed';
        const failures = (result.failureMessages ?? []).map(plain);
        message = firstLines(failures[0] ?? 'failed');
        output.push(...failures);
        if (this.console) output.push(`----- console output of the whole file -----\n${this.console}`);
        break;
      }
      case 'todo':
        outcome = 'skipped';
        message = 'todo';
        break;
      default: // pending, skipped, disabled
        outcome = 'skipped';
        message = 'skipped';
    }
    this.channel.send({
      op: 'case',
      unit: this.unit,
      test: id,
      outcome,
      phase: 'call',
      duration_ms: Math.max(0, Math.round(result.duration ?? 0)),
      message: cap(message, MESSAGE_LIMIT * 2),
      output: cap(output.join('\n\n')),
      xfail: false,
    });
  }
}

let current = null;

/** The reporter: jest requires this file by path and gets this class. */
class TestgridReporter {
  onTestCaseStart(_test, info) {
    const unit = current;
    if (!unit || !info || !unit.wanted(info)) return;
    unit.channel.send({ op: 'started', unit: unit.unit, test: unit.idOf(info) });
  }

  onTestCaseResult(_test, result) {
    if (!current || !result) return;
    // jest hands over the console output per file, when the file ends: a failed case waits
    // for it (and is counted as sent, for the final tally).
    if (result.status === 'failed') {
      if (!current.wanted(result)) return;
      const id = current.idOf(result);
      current.sent.set(id, (current.sent.get(id) ?? 0) + 1);
      current.held.push(result);
    } else {
      current.sendCase(result);
    }
  }

  onTestFileResult(_test, testResult) {
    // jest drops the console buffer right after this call.
    if (current && testResult?.console?.length) {
      current.console = testResult.console
        .map((entry) => {
          const origin = plain(entry.origin ?? '').trim().split('\n')[0];
          return `console.${entry.type}: ${plain(entry.message)}${origin ? `\n    ${origin}` : ''}`;
        })
        .join('\n');
      if (current.console.length > OUTPUT_LIMIT) current.console = cap(current.console, OUTPUT_LIMIT / 2);
    }
  }

  getLastError() {
    return undefined;
  }
}

module.exports = TestgridReporter;

// ---------------------------------------------------------------------------------------------
// jest itself.

function loadJest() {
  const { require, entry } = resolveFromProject('jest', 'jest');
  // eslint-disable-next-line import/no-dynamic-require
  const jest = require(entry);
  let version = '0';
  try {
    version = jest.getVersion?.() ?? require('jest/package.json').version;
  } catch {
    // unknown
  }
  return { jest, version };
}

async function runFile(jest, channel, message) {
  const { file, caseName } = splitUnitPath(message);
  const unit = new Unit(message.unit, file, caseName, channel);
  current = unit;
  const argv = {
    _: [unit.absPath],
    $0: 'testgrid-jest',
    runInBand: true,
    runTestsByPath: true,
    ci: true,
    watch: false,
    watchAll: false,
    // Not silent: jest keeps the tests' console output per file (buffered, not printed).
    silent: false,
    verbose: false,
    useStderr: true,
    reporters: [[__filename, {}]],
    passWithNoTests: true,
    // bail would end this process (jest exits after a bailing run).
    bail: 0,
    // jest's test name is the describe titles and the title joined by " ".
    testNamePattern: caseName === null ? undefined : `^${escapeRegExp(caseName.split(' > ').join(' '))}$`,
  };
  try {
    const { results } = await jest.runCLI(argv, [process.cwd()]);
    const fileResults = results.testResults ?? [];
    if (fileResults.length === 0 && unit.errors.length === 0) {
      unit.errors.push(
        `jest found no test file at ${file} (does it match testMatch, and not testPathIgnorePatterns?)`,
      );
    }
    const ids = [];
    const missing = [];
    const seen = new Map();
    for (const fileResult of fileResults) {
      for (const result of fileResult.testResults ?? []) {
        if (!unit.wanted(result)) continue;
        const id = unit.idOf(result);
        ids.push(id);
        const count = (seen.get(id) ?? 0) + 1;
        seen.set(id, count);
        if (count > (unit.sent.get(id) ?? 0)) missing.push(result);
      }
      const execError = fileResult.testExecError;
      if (execError || (fileResult.failureMessage && (fileResult.testResults ?? []).length === 0)) {
        unit.errors.push(suiteFailure(fileResult.failureMessage || errorText(execError)));
      } else if (fileResult.failureMessage && !(fileResult.testResults ?? []).some((r) => r.status === 'failed')) {
        // Failed without a failing test: a failing hook outside any test, say.
        unit.errors.push(plain(fileResult.failureMessage).trim());
      }
    }
    channel.send({ op: 'collected', unit: unit.unit, tests: ids });
    for (const result of unit.held.splice(0)) unit.sendCase(result, true);
    for (const result of missing) unit.sendCase(result);
  } catch (e) {
    unit.errors.push(`the testgrid runner could not run ${file}: ${errorText(e)}`);
  } finally {
    current = null;
  }
  for (const result of unit.held.splice(0)) unit.sendCase(result, true);
  if (caseName !== null && unit.sent.size === 0 && unit.errors.length === 0) {
    unit.errors.push(`no test named "${caseName}" in ${file}`);
  }
  const errors = [...new Set(unit.errors)].filter(Boolean);
  if (errors.length && unit.console) errors.push(`----- console output of the file -----\n${unit.console}`);
  channel.send({ op: 'done', unit: unit.unit, error: errors.length ? cap(errors.join('\n\n')) : null });
}

// Whatever a test leaves behind must not kill the runner: the tests run in this process. jest
// installs its own handlers while a file runs (and attributes errors to the running test), and
// jest 29 forgets ours when it puts the previous ones back: ours stay installed, and act only when
// no other handler is there.
const guards = {
  unhandledRejection(reason) {
    if (process.listeners('unhandledRejection').some((l) => l !== guards.unhandledRejection)) return;
    log('unhandled rejection:', errorText(reason));
    if (current) current.errors.push(`Unhandled rejection: ${errorText(reason)}`);
  },
  uncaughtException(error) {
    if (process.listeners('uncaughtException').some((l) => l !== guards.uncaughtException)) return;
    log('uncaught exception:', errorText(error));
    if (current) current.errors.push(`Uncaught exception: ${errorText(error)}`);
  },
};

function installGuards() {
  for (const [event, guard] of Object.entries(guards)) {
    const copies = process.listeners(event).filter((l) => l === guard).length;
    if (copies === 1) continue;
    for (let i = 0; i < copies; i++) process.removeListener(event, guard);
    process.on(event, guard);
  }
}

function guardProcess() {
  installGuards();
  const removeAll = process.removeAllListeners;
  process.removeAllListeners = function removeAllListeners(...args) {
    const result = removeAll.apply(this, args);
    if (this === process && (args[0] === undefined || args[0] in guards)) installGuards();
    return result;
  };
}

async function main() {
  const socketPath = socketPathOrExit(log);
  guardProcess();
  // A test's process.exit (jest hands the tests this process's exit) fails the test instead.
  const realExit = process.exit;
  process.exit = function exit(code) {
    if (current) {
      throw new Error(`process.exit(${code ?? ''}) called during a test (the testgrid runner keeps running)`);
    }
    return realExit.call(process, code);
  };
  const channel = new Channel(socketPath, log);
  await channel.connected();
  const { jest, version } = loadJest();
  log(`jest ${version} ready in ${process.cwd()}`);
  channel.send({ op: 'ready', pid: process.pid });
  await serve(channel, async (message) => {
    await runFile(jest, channel, message);
    installGuards();
  });
  channel.socket.end();
  realExit.call(process, 0);
}

if (require.main === module) {
  main().catch((e) => {
    log('fatal:', errorText(e));
    process.exit(1);
  });
}
