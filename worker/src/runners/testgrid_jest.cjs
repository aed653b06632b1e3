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
// jest is the project's own (resolved from the working directory). The runner does once what
// `jest` does at every start: reads the config (`readConfigs`, with the project's own options),
// builds each project's file map (jest-haste-map, from its on-disk cache) and runs
// `globalSetup`. Each file then goes to the project's test runner (jest-runner's, or the
// config's `runner`) in band, as jest's own workers run it: a fresh module registry and
// environment per file, the transform cache shared, this file's reporter hooks fed from the
// runner's events. `globalTeardown` runs at `stop`. A file is run in every project whose
// testMatch / testRegex / testPathIgnorePatterns take it, as `jest --runTestsByPath` does.
// Should jest's internals not be found (an unknown jest), each file is one `runCLI` call.
//
// A test ID is "FILE::a > b > c": FILE as given in the run message, then the describe titles and
// the test title joined with " > ". Skipped, disabled and todo tests are "skipped". A file that
// fails to run (syntax or import error, a throwing describe block, a failing beforeAll) ends with
// "error". A test that calls process.exit fails instead of ending the runner.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const common = require('./testgrid_runner_common.cjs');

const { OUTPUT_LIMIT, MESSAGE_LIMIT, cap, plain, escapeRegExp, Channel } = common;
const { resolveFromProject, splitUnitPath, socketPathOrExit, exitWithTheWorker, serve } = common;

const log = (...args) => process.stderr.write(`[testgrid-jest] ${args.join(' ')}\n`);

// As jest's own command does before anything else: tests and transformers (babel's `env`
// options, its cache key) see NODE_ENV=test unless the user set it.
if (require.main === module && process.env.NODE_ENV == null) process.env.NODE_ENV = 'test';

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
  return { jest, version, entry };
}

/** Resolve `name` as jest's own packages do (pnpm keeps them out of the project's reach). */
function jestInternals(entry) {
  const { createRequire } = require('node:module');
  const fromJest = createRequire(entry);
  const corePath = fromJest.resolve('@jest/core');
  const fromCore = createRequire(corePath);
  const interop = (m) => (m && m.__esModule && m.default ? m.default : m);
  let messages = null;
  try {
    messages = fromCore('jest-message-util');
  } catch {
    // plain error texts then
  }
  return {
    core: fromCore('@jest/core'),
    config: fromCore('jest-config'),
    Runtime: interop(fromCore('jest-runtime')),
    transform: fromCore('@jest/transform'),
    messages,
    reporters: () => fromCore('@jest/reporters'),
    // istanbul's coverage maps, as jest's coverage reporter merges them.
    coverageMaps: () => createRequire(fromCore.resolve('@jest/reporters'))('istanbul-lib-coverage'),
  };
}

/** Options of jest's command line that the runner decides itself, dropped from the session's. */
const OURS = [
  'watch', 'watchAll', 'json', 'outputFile', 'reporters', 'listTests', 'showConfig', 'runInBand', 'maxWorkers',
  'shard', 'ci', 'useStderr', 'bail', 'passWithNoTests', 'runTestsByPath', 'testPathPatterns', 'testPathPattern',
  'findRelatedTests', 'onlyChanged', 'changedSince', 'lastCommit', 'clearCache', 'init', 'help', 'version',
];

/**
 * The session's arguments (`testgrid run -- -t io --selectProjects unit`) as jest's own command
 * line reads them (jest-cli's yargs options, checked by jest-validate as `jest` checks them), less
 * what the runner decides itself. Unlike jest-cli's `buildArgv`, nothing here exits the process:
 * a bad argument throws, and the runner's start fails with jest's message.
 */
function userArgv(entry) {
  const args = common.sessionArgs();
  if (args.length === 0) return {};
  const { createRequire } = require('node:module');
  const fromCli = createRequire(createRequire(entry).resolve('jest-cli'));
  const { yargsOptions } = fromCli('jest-cli');
  const parsed = fromCli('yargs')(args)
    .options(yargsOptions)
    .help(false)
    .version(false)
    .exitProcess(false)
    .fail((message, error) => {
      throw error ?? new Error(message);
    })
    .parseSync();
  fromCli('jest-validate').validateCLIOptions(
    parsed,
    { ...yargsOptions, deprecationEntries: fromCli('jest-config').deprecationEntries },
    args.map((a) => a.replace(/^--?/, '')),
  );
  const user = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!key.includes('-') && key !== '$0' && key !== '_' && !OURS.includes(key)) user[key] = value;
  }
  return user;
}

/** The projects `--selectProjects` and `--ignoreProjects` keep (jest applies them in runCLI). */
function chosenProjects(configs, user) {
  const name = (config) => config.displayName?.name;
  return configs.filter(
    (config) =>
      (!user.selectProjects || user.selectProjects.includes(name(config))) &&
      !(user.ignoreProjects && user.ignoreProjects.includes(name(config))),
  );
}

/** What jest does once per `jest` run: config, file maps, global setup (`setup` false: none). */
async function startWarm(internals, setup = true) {
  // jest copies some options into each project's config (`reporters`, and since 30.5 `silent`
  // and `verbose`), whose text keys its transform cache on disk. Any of ours in there (this
  // file's path is in a folder of its own per worker) and every run would miss the cache that
  // jest and earlier runs left, transforming (and instrumenting, for coverage) every file again.
  // So the projects' configs are jest's own: those options are set on the global config only
  // (which is where jest's test runner reads them), the reporter is fed by this runner itself.
  const { reporters: _ours, silent, verbose, ...options } = commonArgv();
  const { silent: userSilent, verbose: userVerbose, ...user } = internals.user ?? {};
  const argv = { $0: 'testgrid-jest', _: [], ...user, ...options };
  const read = await internals.config.readConfigs(argv, [process.cwd()]);
  const globalConfig = { ...read.globalConfig, silent: userSilent ?? silent, verbose: userVerbose ?? verbose };
  const configs = chosenProjects(read.configs, user);
  const projects = await Promise.all(
    configs.map(async (config) => {
      fs.mkdirSync(config.cacheDirectory, { recursive: true });
      const hasteMap = await internals.Runtime.createHasteMap(config, {
        maxWorkers: 1,
        resetCache: !config.cache,
        watch: false,
        watchman: globalConfig.watchman,
      });
      const { hasteFS, moduleMap } = await hasteMap.build();
      const context = { config, hasteFS, moduleMap, resolver: internals.Runtime.createResolver(config, moduleMap) };
      return { context, search: new internals.core.SearchSource(context) };
    }),
  );
  // Coverage as jest collects it, kept for the merge (see `saveCoverage`).
  const coverage =
    process.env.TESTGRID_COVERAGE_DIR && globalConfig.collectCoverage
      ? { map: internals.coverageMaps().createCoverageMap({}), v8: [] }
      : null;
  // The session's own `-t`, which a whole file runs under.
  const userPattern = read.globalConfig.testNamePattern;
  const state = { internals, globalConfig, projects, runners: new Map(), coverage, userPattern };
  if (setup) await globalHook(state, 'globalSetup');
  return state;
}

/** jest's `globalSetup` / `globalTeardown`: each module once, transpiled as jest does. */
async function globalHook(state, name) {
  const { globalConfig, projects, internals } = state;
  const paths = new Map();
  for (const { context } of projects) if (context.config[name]) paths.set(context.config[name], context.config);
  if (globalConfig[name] && !paths.has(globalConfig[name])) paths.set(globalConfig[name], projects[0]?.context.config);
  for (const [modulePath, config] of paths) {
    const transformer = await internals.transform.createScriptTransformer(config);
    await transformer.requireAndTranspileModule(modulePath, async (hook) => {
      const fn = hook && typeof hook === 'object' && typeof hook.default === 'function' ? hook.default : hook;
      if (typeof fn !== 'function') throw new TypeError(`${name} file must export a function at ${modulePath}`);
      await fn(globalConfig, config);
    });
  }
}

/** The project's test runner for `config` (one instance per runner and options). */
async function testRunnerFor(state, config) {
  const key = `${config.runner}\u0000${JSON.stringify(config.runnerOptions ?? null)}`;
  let runner = state.runners.get(key);
  if (!runner) {
    const transformer = await state.internals.transform.createScriptTransformer(config);
    const Runner = await transformer.requireAndTranspileModule(config.runner);
    runner = new Runner(state.globalConfig, { changedFiles: undefined, sourcesRelatedToTestsInChangedFiles: undefined }, config.runnerOptions);
    state.runners.set(key, runner);
  }
  return runner;
}

const watcher = { isInterrupted: () => false, isWatchMode: () => false, on() {}, setState() {} };

/** A file jest could not run, as jest words it ("Test suite failed to run" and the error). */
function execFailure(state, error, config, testPath) {
  const formatted = state.internals.messages?.formatExecError?.(error, config, state.globalConfig, testPath, true, true);
  return formatted ? suiteFailure(formatted) : errorText(error);
}

/** Run one file in band in every project that takes it; the file results, as runCLI's. */
async function runWarmFile(state, unit) {
  const reporter = new TestgridReporter();
  const matching = state.projects.filter((p) => {
    try {
      return p.search.isTestFilePath(unit.absPath);
    } catch {
      return false;
    }
  });
  if (!fs.existsSync(unit.absPath)) {
    unit.errors.push(`no such file: ${unit.file}`);
    return [];
  }
  const fileResults = [];
  for (const { context } of matching) {
    const { config } = context;
    const test = { context, duration: undefined, path: unit.absPath };
    const onResult = (result) => {
      if ((result.testResults ?? []).length === 0 && !result.testExecError) {
        const message = 'Your test suite must contain at least one test.';
        result.testExecError = { message, stack: new Error(message).stack };
        result.failureMessage = execFailure(state, result.testExecError, config, unit.absPath);
      }
      reporter.onTestFileResult(test, result);
      keepCoverage(state, result);
      fileResults.push(result);
    };
    const onFailure = (error) => {
      const result = { testResults: [], testExecError: error, failureMessage: execFailure(state, error, config, unit.absPath) };
      fileResults.push(result);
    };
    const runner = await testRunnerFor(state, config);
    if (runner.supportsEventEmitters) {
      const unsubscribe = [
        runner.on('test-file-success', ([, result]) => onResult(result)),
        runner.on('test-file-failure', ([, error]) => onFailure(error)),
        runner.on('test-case-start', ([, info]) => reporter.onTestCaseStart(test, info)),
        runner.on('test-case-result', ([, result]) => reporter.onTestCaseResult(test, result)),
      ];
      try {
        await runner.runTests([test], watcher, { serial: true });
      } finally {
        for (const off of unsubscribe) off?.();
      }
    } else {
      await runner.runTests(
        [test],
        watcher,
        async () => {},
        async (_test, result) => onResult(result),
        async (_test, error) => onFailure(error),
        { serial: true },
      );
    }
  }
  return fileResults;
}

// ---------------------------------------------------------------------------------------------
// Coverage. Each runner keeps what its files covered and, at stop, writes it to
// TESTGRID_COVERAGE_DIR (set by a worker whose session's coverage is merged: local mode). The
// merge (`--merge-coverage DIR`) feeds every runner's part to jest's own CoverageReporter, which
// adds the untested files of `collectCoverageFrom` and writes the project's reporters where
// jest alone writes them, as after one `jest` run.

function keepCoverage(state, result) {
  const kept = state.coverage;
  if (!kept) return;
  if (result.v8Coverage) kept.v8.push(result.v8Coverage);
  if (result.coverage) kept.map.merge(result.coverage);
}

function saveCoverage(state) {
  const kept = state?.coverage;
  if (!kept || (!kept.map.files().length && !kept.v8.length)) return;
  const dir = process.env.TESTGRID_COVERAGE_DIR;
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `jest-${process.pid}.json`);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify({ coverage: kept.map.toJSON(), v8: kept.v8 }));
  fs.renameSync(`${file}.tmp`, file);
}

/** `--merge-coverage DIR`: every runner's coverage, reported as one jest run reports it. */
async function mergeCoverage(dir) {
  const { entry } = loadJest();
  const internals = jestInternals(entry);
  const state = await startWarm(internals, false);
  const { CoverageReporter } = internals.reporters();
  const reporter = new CoverageReporter(state.globalConfig, {
    changedFiles: undefined,
    sourcesRelatedToTestsInChangedFiles: undefined,
  });
  const parts = fs.readdirSync(dir).filter((name) => /^jest-\d+\.json$/.test(name));
  for (const name of parts) {
    const part = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
    if (part.coverage && Object.keys(part.coverage).length) reporter.onTestResult(null, { coverage: part.coverage });
    for (const v8 of part.v8 ?? []) reporter.onTestResult(null, { v8Coverage: v8 });
  }
  await reporter.onRunComplete(new Set(state.projects.map((p) => p.context)), {});
  const error = reporter.getLastError?.();
  if (error) {
    process.stderr.write(`${plain(error.message)}\n`);
    return 1;
  }
  return 0;
}

/** What every run of ours asks of jest, whatever the project's config says. */
function commonArgv() {
  return {
    runInBand: true,
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
  };
}

async function runFile(loaded, channel, message) {
  const { file, caseName } = splitUnitPath(message);
  const unit = new Unit(message.unit, file, caseName, channel);
  current = unit;
  // jest's test name is the describe titles and the title joined by " ".
  const testNamePattern =
    caseName === null ? (loaded.warm?.userPattern ?? loaded.user.testNamePattern) : `^${escapeRegExp(caseName.split(' > ').join(' '))}$`;
  try {
    let fileResults;
    if (loaded.warm) {
      if (loaded.warm.globalConfig.testNamePattern !== testNamePattern) {
        // Test runners hold the global config: new ones for the new pattern.
        loaded.warm.globalConfig = { ...loaded.warm.globalConfig, testNamePattern };
        loaded.warm.runners.clear();
      }
      fileResults = await runWarmFile(loaded.warm, unit);
    } else {
      const argv = { ...loaded.user, _: [unit.absPath], $0: 'testgrid-jest', ...commonArgv(), runTestsByPath: true, testNamePattern };
      const { results } = await loaded.jest.runCLI(argv, [process.cwd()]);
      fileResults = results.testResults ?? [];
    }
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
  exitWithTheWorker();
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
  const { jest, version, entry } = loadJest();
  // The session's arguments: a bad one ends the runner with jest's own message.
  const user = userArgv(entry);
  let warm = null;
  let internals = null;
  try {
    internals = { ...jestInternals(entry), user };
  } catch (e) {
    log(`jest ${version}: its internals are not where jest 29 and 30 keep them (${e.message}); one runCLI per file`);
  }
  // A config that does not load, or a globalSetup that throws, ends the runner: every file
  // would fail the same way, and its last words say why.
  if (internals) warm = await startWarm(internals);
  log(`jest ${version} ready in ${process.cwd()}${warm ? '' : ' (one runCLI per file)'}`);
  channel.send({ op: 'ready', pid: process.pid });
  const loaded = { jest, warm, user };
  await serve(channel, async (message) => {
    await runFile(loaded, channel, message);
    installGuards();
  });
  if (warm) {
    try {
      saveCoverage(warm);
    } catch (e) {
      log('could not keep the coverage:', errorText(e));
    }
    try {
      await globalHook(warm, 'globalTeardown');
    } catch (e) {
      log('globalTeardown failed:', errorText(e));
    }
  }
  channel.socket.end();
  realExit.call(process, 0);
}

if (require.main === module && process.argv[2] === '--merge-coverage') {
  mergeCoverage(process.argv[3]).then(
    (code) => process.exit(code),
    (e) => {
      log('merging the coverage failed:', errorText(e));
      process.exit(1);
    },
  );
} else if (require.main === module) {
  main().catch((e) => {
    log('fatal:', errorText(e));
    process.exit(1);
  });
}
