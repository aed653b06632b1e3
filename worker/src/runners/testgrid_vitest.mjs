// testgrid's warm vitest runner: one vitest instance, fed test files on demand.
//
// The worker starts `node testgrid_vitest.mjs` per slot in the project root and talks to it over
// the Unix socket named by TESTGRID_RUNNER_SOCKET, never over stdout (the tests own it). One JSON
// object per line each way; the protocol is the pytest runner's (docs/runners.md), plus `begin`:
//
// worker -> runner:  {"op": "run", "unit": N, "path": "src/a.test.ts", "slot": S}
//                    (path also "src/a.test.ts::a > b", or "|PROJECT| src/a.test.ts" for the
//                    file in that vitest project; slot: the worker slot the file is run for)
//                    {"op": "stop"}  (or EOF)
// runner -> worker:  {"op": "ready", "pid": P, "shares": true|false}
//                    {"op": "begin", "unit": N}        (the file began: the worker times it from here)
//                    {"op": "collected", "unit": N, "tests": ["src/a.test.ts::a > b", ...]}
//                    {"op": "started", "unit": N, "test": ID}
//                    {"op": "case", "unit": N, "test": ID, "outcome": O, "phase": "call",
//                     "duration_ms": D, "message": M, "output": OUT, "xfail": false}
//                    {"op": "done", "unit": N, "error": null | TEXT}
//                    {"op": "listed", "files": [{"file": ABS, "projectName": P}]} | {"op": "listed", "error": TEXT}
//                    (before "ready", when started with TESTGRID_LIST_FILES=1: `vitest list
//                    --filesOnly`'s list, for local mode's CLI)
//
// vitest is the project's own (resolved from the working directory), driven through its Node API
// (`createVitest` from `vitest/node`) with a reporter object of ours: vitest 3.x, 4.x and 5.x.
// The config file found from the working directory applies; we force watch off and our reporter
// only, and size vitest's pool ourselves.
//
// With vitest 4 and later one runner serves every slot of its session on a worker ("shares":
// true), as one `vitest run --maxWorkers=N` serves N workers: one vite server transforms each
// module once for all of them. Each file is handed to vitest's pool as soon as it arrives
// (`vitest.pool.runTests`, under one long-lived run, as vitest's own run feeds its pool), and
// the pool runs as many files at once as there are slots with files in flight. The worker sends
// each slot's next file while one runs, so a file is always queued behind each running one and
// the pool keeps its test workers: with `isolate: false` their environments and imported modules
// stay warm across files, as in `vitest run`; with isolation each file gets a fresh worker, as
// in `vitest run`. vitest 3 ("shares": false, one runner per slot) runs one
// `runTestSpecifications` per file, in order.
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
const { resolveFromProject, splitUnitPath, socketPathOrExit, exitWithTheWorker, serve } = common;

const log = (...args) => process.stderr.write(`[testgrid-vitest] ${args.join(' ')}\n`);

// What `vitest` itself sets before it reads the config (which may test them), unless the user
// set NODE_ENV: its test workers get the same from vitest.
process.env.TEST = 'true';
process.env.VITEST = 'true';
process.env.NODE_ENV ??= 'test';

// The worker asks for the session's list of test files as the runner starts (local mode); the
// tests never see the request.
const listWanted = process.env.TESTGRID_LIST_FILES === '1';
delete process.env.TESTGRID_LIST_FILES;

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
// The files asked for and not done, shared by the reporter and the run loop.

class Unit {
  constructor(unit, slot, file, caseName, channel) {
    this.unit = unit;
    this.slot = slot; // the worker slot it runs for (the pool runs one file per busy slot)
    this.absPath = path.resolve(process.cwd(), file);
    this.file = file; // the file as given (without its project)
    this.prefix = file; // what every test ID starts with: the path as given, project included
    this.caseName = caseName; // only this test, when the path was FILE::CASE
    this.channel = channel;
    this.key = null; // the project and module it runs as, once known
    this.begun = false;
    this.collected = false;
    this.moduleErrorsTaken = false;
    this.started = new Set(); // vitest test ids
    this.reported = new Set(); // vitest test ids
    this.logs = new Map(); // vitest test id -> console text
    this.errors = []; // file-level error texts
    this.bothWays = false; // type-checked and run: its type tests' names are marked
  }

  /**
   * A test's name: vitest's fullName, marked `[typecheck] ` when it comes from a type check of a
   * file that also runs (typecheck.include taking runtime test files): vitest then reports each
   * test twice, once per way, under the same name.
   */
  nameOf(testCase) {
    const typed = this.bothWays && testCase.meta?.()?.typecheck === true;
    return typed ? `${TYPECHECK_MARK}${testCase.fullName}` : testCase.fullName;
  }

  idOf(testCase) {
    return `${this.prefix}::${this.nameOf(testCase)}`;
  }

  wanted(testCase) {
    return this.caseName === null || this.nameOf(testCase) === this.caseName;
  }
}

/** Units by the project and module they run as. */
const pending = new Map();
/** Units by the id of vitest's file task (the prefix of its tests' and console logs' ids). */
const byFileTask = new Map();
/** The unit whose file runs now (for console output vitest cannot place). */
let running = null;

/** What starts the name of a type test whose file also runs (see `Unit.nameOf`). */
const TYPECHECK_MARK = '[typecheck] ';

const keyOf = (projectName, moduleId) => `${projectName ?? ''}\u0000${moduleId}`;

function unitOf(module) {
  if (module == null) return undefined;
  return pending.get(keyOf(module.project?.name, module.moduleId));
}

function allTests(module) {
  return Array.from(module.children.allTests());
}

function begin(unit, module) {
  if (module?.id) byFileTask.set(module.id, unit);
  running = unit;
  if (unit.begun) return;
  unit.begun = true;
  unit.channel.send({ op: 'begin', unit: unit.unit });
}

function collect(unit, module) {
  if (!unit || unit.collected) return;
  begin(unit, module);
  unit.collected = true;
  const tests = allTests(module).filter((t) => unit.wanted(t)).map((t) => unit.idOf(t));
  unit.channel.send({ op: 'collected', unit: unit.unit, tests });
}

function reportCase(unit, testCase) {
  if (!unit || unit.reported.has(testCase.id) || !unit.wanted(testCase)) return;
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
  onTestModuleQueued(module) {
    const unit = unitOf(module);
    if (unit) begin(unit, module);
  },
  onTestModuleCollected(module) {
    collect(unitOf(module), module);
  },
  onTestCaseReady(testCase) {
    const unit = unitOf(testCase.module);
    if (!unit || unit.started.has(testCase.id) || !unit.wanted(testCase)) return;
    unit.started.add(testCase.id);
    unit.channel.send({ op: 'started', unit: unit.unit, test: unit.idOf(testCase) });
  },
  onTestCaseResult(testCase) {
    reportCase(unitOf(testCase.module), testCase);
  },
  onUserConsoleLog(entry) {
    const id = String(entry.taskId ?? '');
    const unit = byFileTask.get(id.split('_')[0]) ?? running;
    if (!unit) return;
    const text = (unit.logs.get(id) ?? '') + `${entry.type}: ${plain(entry.content)}`;
    // Keep the head and the tail of a chatty test's console.
    unit.logs.set(id, text.length > OUTPUT_LIMIT * 2 ? cap(text, OUTPUT_LIMIT) : text);
  },
  onTestModuleEnd(module) {
    finishModule(unitOf(module), module);
  },
};

/** An error vitest could not pin on a test (it fails the run): an unhandled rejection, say. */
function unhandledText(error) {
  const kind = error?.type || 'Unhandled error';
  const during = error?.VITEST_TEST_NAME ? ` during "${error.VITEST_TEST_NAME}"` : '';
  return `${kind}${during}: ${errorText(error)}`;
}

function finishModule(unit, module) {
  if (!unit || !module) return;
  collect(unit, module);
  for (const testCase of allTests(module)) reportCase(unit, testCase);
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

/**
 * VITEST_POOL_ID numbers vitest's test workers from 1 to maxWorkers, so that tests can share out
 * resources (a database per worker). vitest's pool renumbers its free ids at each `runTests`
 * call, and this runner makes a call per file while others run: ids would repeat between test
 * workers running at once. Number them here instead, when a test worker starts (the lowest id
 * no running worker holds), and free the id when it is asked to stop. Only where vitest's own
 * worker classes are as expected; otherwise vitest's numbering stands.
 */
function numberTestWorkers(api) {
  const held = new Set();
  const free = (worker) => {
    if (worker.__testgridPoolId !== undefined) held.delete(worker.__testgridPoolId);
    worker.__testgridPoolId = undefined;
  };
  for (const Worker of [api.ForksPoolWorker, api.ThreadsPoolWorker]) {
    const proto = Worker?.prototype;
    if (typeof proto?.send !== 'function' || typeof proto?.stop !== 'function') continue;
    const { send, stop } = proto;
    proto.send = function sendNumbered(message, ...rest) {
      if (message?.type === 'start' && message.__vitest_worker_request__ && 'poolId' in message) {
        if (this.__testgridPoolId === undefined) {
          let id = 1;
          while (held.has(id)) id += 1;
          held.add(id);
          this.__testgridPoolId = id;
        }
        return send.call(this, { ...message, poolId: this.__testgridPoolId }, ...rest);
      }
      if (message?.type === 'stop' && message.__vitest_worker_request__) free(this);
      return send.call(this, message, ...rest);
    };
    // A worker asked to stop runs no more tests: its id is free from then on.
    proto.stop = function stopNumbered(...args) {
      free(this);
      return stop.apply(this, args);
    };
  }
}

/** Where this runner's part of a session's coverage goes, when the worker merges it. */
const ownCoverage = process.env.TESTGRID_COVERAGE_DIR
  ? path.join(process.env.TESTGRID_COVERAGE_DIR, `vitest-${process.pid}`)
  : null;

/**
 * The session's arguments (`testgrid run -- -t io --project unit`) as vitest's own command line
 * reads them (`parseCLI`), less what the runner decides itself: reporters, watch mode, the UI,
 * and the files (the CLI listed them with these arguments already).
 */
function userOptions(api) {
  const args = common.sessionArgs();
  if (args.length === 0) return { user: {}, filters: [] };
  if (typeof api.parseCLI !== 'function') {
    throw new Error('this vitest cannot read the session\'s arguments (vitest/node has no parseCLI)');
  }
  const refused = args.find((a) => /^(-h|--help|-v|--version)$/.test(a));
  if (refused) throw new Error(`${refused} is not an option for a test run`);
  const { filter, options } = api.parseCLI(['vitest', ...args]);
  const {
    '--': _rest, color: _color, t: _t, w: _w, u: _u, r: _r, c: _c, h: _h, v: _v,
    reporter: _reporter, reporters: _reporters, outputFile: _outputFile, watch: _watch, run: _run,
    ui: _ui, open: _open, api: _api, maxWorkers: _maxWorkers, minWorkers: _minWorkers,
    fileParallelism: _fileParallelism, shard: _shard,
    ...user
  } = options;
  // As vitest's own CLI does with an `--exclude` given on it.
  if (user.exclude) {
    user.cliExclude = [user.exclude].flat();
    delete user.exclude;
  }
  return { user, filters: (filter ?? []).map(String) };
}

/**
 * The session's test files as `vitest list --filesOnly --json` lists them (the same call, on the
 * same configuration and arguments): `[{file, projectName}]`, a file once per project and way it
 * runs. Asked for by local mode, whose CLI then spares itself a `vitest list` of its own. They
 * come in the order `vitest run` would start them: the project's sequencer (`sequence.sequencer`,
 * vitest's own by default: failed first, then the longest in vitest's results cache, unknown
 * and larger files before them; `sequence.shuffle`).
 */
async function listFiles(vitest, filters) {
  let specifications =
    typeof vitest.getRelevantTestSpecifications === 'function'
      ? await vitest.getRelevantTestSpecifications(filters)
      : await vitest.globTestSpecifications(filters);
  const Sequencer = vitest.config?.sequence?.sequencer;
  if (typeof Sequencer === 'function') {
    try {
      specifications = await new Sequencer(vitest).sort([...specifications]);
    } catch (e) {
      log('the sequencer could not order the files:', errorText(e));
    }
  }
  return specifications.map((spec) => ({ file: spec.moduleId, projectName: spec.project?.name || undefined }));
}

/**
 * vitest's results cache (each file's duration and whether it failed, which its sequencer orders
 * the next run by), brought up to date with the files this runner ran, as `vitest run` does at
 * its end.
 */
async function updateResultsCache(vitest) {
  const results = vitest.cache?.results;
  if (typeof results?.updateResults !== 'function' || typeof results.writeToCache !== 'function') return;
  try {
    results.updateResults(vitest.state.getFiles());
    await results.writeToCache();
  } catch (e) {
    log('could not update vitest\'s results cache:', errorText(e));
  }
}

async function startVitest(channel) {
  const { api, version } = await loadVitest();
  const major = parseInt(version, 10);
  if (major >= 4) numberTestWorkers(api);
  const { user, filters } = userOptions(api);
  const options = {
    ...user,
    // Coverage (when the project's config turns it on) as raw istanbul JSON, merged later.
    ...(ownCoverage
      ? { coverage: { ...user.coverage, reportsDirectory: ownCoverage, reporter: [['json', { file: 'coverage-final.json' }]], reportOnFailure: true } }
      : {}),
    watch: false,
    run: true,
    reporters: [reporter],
    // One test worker until files come; then one per slot with files in flight (`sizePool`).
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
  if (listWanted) {
    try {
      channel.send({ op: 'listed', files: await listFiles(vitest, filters) });
    } catch (e) {
      channel.send({ op: 'listed', error: cap(errorText(e), MESSAGE_LIMIT * 2) });
    }
  }
  let pipelined = false;
  // `vitest run` makes its coverage provider at start (when the config enables coverage).
  await vitest.createCoverageProvider?.();
  if (major >= 4) {
    // An empty run creates vitest's pool; files then go to it one by one (see the top).
    await vitest.runTestSpecifications([], false);
    pipelined = typeof vitest.pool?.runTests === 'function' && typeof vitest.initializeGlobalSetup === 'function';
    // That run's end cleared the coverage provider's folder of per-file results: make it again.
    await vitest.coverageProvider?.clean?.(false);
    // Each project's type tests, as vitest lists them (typecheck.include), known before files come.
    await Promise.all((vitest.projects ?? []).filter((p) => p.config?.typecheck?.enabled).map((p) => p.globTestFiles?.()));
  }
  log(`vitest ${version} ready in ${process.cwd()}${pipelined ? '' : ' (one run per file)'}`);
  // The session's own `-t`, which a whole file runs under (vitest 3 keeps it per run).
  const userPattern = user.testNamePattern ?? null;
  return { vitest, version, major, pipelined, userPattern };
}

/** The project a run path names (`|NAME| FILE`), else the one whose globs take the file. */
function projectFor(vitest, named, absPath) {
  const projects = vitest.projects ?? [];
  if (named !== null) {
    const project = projects.find((p) => p.name === named);
    if (!project) throw new Error(`no vitest project named "${named}" (the projects are: ${projects.map((p) => p.name).join(', ')})`);
    return project;
  }
  for (const project of projects) {
    try {
      if (project.matchesTestGlob?.(absPath) || isTypeTest(project, absPath)) return project;
    } catch {
      // a project that cannot tell: try the next
    }
  }
  return vitest.getRootProject?.() ?? projects[0];
}

/** Whether `absPath` is one of the project's type tests (`typecheck.include`, when enabled). */
function isTypeTest(project, absPath) {
  return Boolean(project.config?.typecheck?.enabled && project._isCachedTypecheckFile?.(absPath));
}

/** The specifications vitest makes of a file: a type test runs in vitest's typecheck pool. */
function specificationsOf(project, absPath, options, major) {
  if (major >= 4 && isTypeTest(project, absPath)) {
    const specs = [project.createSpecification(absPath, options ?? [], 'typescript')];
    if (!project.config.typecheck.only && project.matchesTestGlob?.(absPath)) {
      specs.push(project.createSpecification(absPath, options));
    }
    return specs;
  }
  return [project.createSpecification(absPath, options)];
}

/**
 * A project's type tests, checked all at once the first time one is asked for: vitest runs one
 * `tsc` over a project for all its type test files (a `tsc` per file would cost the whole
 * project's check each time); each file then takes its own results from this run.
 */
const typeRuns = new Map();
function typeRun(vitest, project) {
  let run = typeRuns.get(project.name);
  if (!run) {
    run = (async () => {
      const files = project.typecheckFilesList ?? [];
      const specs = files.map((file) => project.createSpecification(file, [], 'typescript'));
      let error = null;
      try {
        await vitest.initializeGlobalSetup(specs);
        await vitest.pool.runTests(specs, []);
      } catch (e) {
        error = e;
      }
      return { modules: new Map(specs.map((spec) => [spec.moduleId, spec.testModule])), error };
    })();
    typeRuns.set(project.name, run);
  }
  return run;
}

/** Test workers the pool may run at once: one per slot with a file in flight. */
function poolSize() {
  return Math.max(1, new Set([...pending.values()].map((unit) => unit.slot)).size);
}

/** Let vitest's pool run `poolSize()` files at once (it reads maxWorkers at each `runTests`). */
function sizePool(vitest) {
  const size = poolSize();
  vitest.config.maxWorkers = size;
  for (const project of vitest.projects ?? []) if (project.config) project.config.maxWorkers = size;
}

/**
 * When no file has begun, the oldest waiting one begins now: vitest says when its pool takes a
 * file (onTestModuleQueued, as the file's collection starts), which a file held up before that
 * (its globalSetup hangs, say) would never hear. Only with nothing running can it be sure the
 * file is next.
 */
function beginWaiting() {
  const units = [...pending.values()];
  if (units.length && !units.some((unit) => unit.begun)) begin(units[0], null);
}

/** The files' way into vitest's pool, one after the other. */
let admission = Promise.resolve();

/** `|NAME| FILE`: the project named, and the rest. */
function splitProject(message) {
  const given = String(message.path ?? '');
  const match = /^\|([^|]*)\| (.*)$/s.exec(given);
  return match ? { project: match[1], rest: { ...message, path: match[2] } } : { project: null, rest: message };
}

/** Errors vitest caught outside any test since the last look (each one is told once). */
const seenErrors = new WeakSet();
function newUnhandledErrors(vitest) {
  const fresh = [];
  for (const error of vitest.state?.getUnhandledErrors?.() ?? []) {
    if (error !== null && typeof error === 'object') {
      if (seenErrors.has(error)) continue;
      seenErrors.add(error);
    }
    fresh.push(error);
  }
  if (!pending.size) vitest.state?.clearErrors?.();
  return fresh;
}

async function runFile(state, channel, message) {
  const { vitest, major } = state;
  const pipelined = state.pipelined;
  const { project: named, rest } = splitProject(message);
  const { file, caseName } = splitUnitPath(rest);
  const slot = Number.isInteger(message.slot) ? message.slot : 0;
  const unit = new Unit(message.unit, slot, file, caseName, channel);
  if (named !== null) unit.prefix = `|${named}| ${file}`;
  try {
    const absPath = unit.absPath;
    const project = projectFor(vitest, named, absPath);
    let options;
    // vitest 5 matches exact full names; before it, a pattern sees the titles joined by " ";
    // vitest 3 takes the pattern for the whole run only.
    const bare = caseName?.startsWith(TYPECHECK_MARK) ? caseName.slice(TYPECHECK_MARK.length) : caseName;
    const pattern = caseName === null ? null : new RegExp(`^${escapeRegExp(bare.split(' > ').join(' '))}$`);
    if (caseName !== null && major >= 5) options = { testNames: [bare] };
    else if (caseName !== null && major === 4) options = { testNamePattern: pattern };
    else if (major < 4 && pattern) vitest.setGlobalTestNamePattern(pattern);
    else if (major < 4 && state.userPattern !== null) vitest.setGlobalTestNamePattern(state.userPattern);
    else if (major < 4) vitest.resetGlobalTestNamePattern?.();
    const specifications = specificationsOf(project, absPath, options, major);
    const specification = specifications[0];
    unit.key = keyOf(project.name, specification.moduleId);
    pending.set(unit.key, unit);
    if (pipelined) {
      // The file begins when vitest's pool takes it (onTestModuleQueued), or now if nothing runs.
      beginWaiting();
      const typed = specifications.filter((spec) => spec.pool === 'typescript');
      const others = specifications.filter((spec) => spec.pool !== 'typescript');
      unit.bothWays = typed.length > 0 && others.length > 0;
      // The project's type check (started by its first type test, shared by all) runs while
      // this file's runtime tests do.
      const checked = typed.length ? typeRun(vitest, project) : null;
      if (others.length) {
        // Files enter vitest's pool in the order they came (the grid's order).
        const turn = admission.then(() => vitest.initializeGlobalSetup(others));
        admission = turn.catch(() => {});
        await turn;
        sizePool(vitest);
        try {
          await vitest.pool.runTests(others, []);
        } catch (e) {
          unit.errors.push(errorText(e));
        }
        for (const spec of others) finishModule(unit, spec.testModule);
      }
      if (checked) {
        const { modules, error } = await checked;
        for (const spec of typed) {
          const module = modules.get(spec.moduleId);
          if (module) finishModule(unit, module);
          else unit.errors.push(error ? errorText(error) : `vitest did not typecheck ${file} (is it in typecheck.include?)`);
        }
      }
    } else {
      begin(unit, null);
      const result = await vitest.runTestSpecifications(specifications, false);
      for (const module of result?.testModules ?? []) finishModule(unitOf(module), module);
    }
  } catch (e) {
    unit.errors.push(`the testgrid runner could not run ${file}: ${errorText(e)}`);
  } finally {
    if (unit.key !== null && pending.get(unit.key) === unit) pending.delete(unit.key);
    for (const [id, owner] of byFileTask) if (owner === unit) byFileTask.delete(id);
    if (running === unit) running = null;
    // With this one done and nothing else running, the next one waiting begins.
    if (pipelined) beginWaiting();
  }
  for (const error of newUnhandledErrors(vitest)) unit.errors.push(unhandledText(error));
  if (caseName !== null && unit.reported.size === 0 && unit.errors.length === 0) {
    unit.errors.push(`no test named "${caseName}" in ${file}`);
  }
  const errors = [...new Set(unit.errors)];
  // Console output from outside any test (module level, beforeAll) explains a file's error.
  const loose = [...unit.logs].filter(([key]) => !unit.reported.has(key)).map(([, text]) => text);
  if (errors.length && loose.length) errors.push(`----- console -----\n${loose.join('')}`);
  channel.send({ op: 'done', unit: unit.unit, error: errors.length ? cap(errors.join('\n\n')) : null });
  // vitest registers a cancel listener per pool call; a long-lived runner forgets them between files.
  if (!pending.size) vitest._onCancelListeners?.clear?.();
}

// ---------------------------------------------------------------------------------------------

/**
 * The coverage of every file this runner ran, as one vitest run reports it (untested files of
 * `coverage.include` too): to the project's own reporters and folder, or, when the worker merges
 * a session's coverage, as raw JSON to this runner's own folder.
 */
async function reportCoverage(vitest) {
  const provider = vitest.coverageProvider;
  if (!provider) return;
  try {
    const map = await provider.generateCoverage({ allTestsRun: true });
    await provider.reportCoverage(map, { allTestsRun: true });
  } catch (e) {
    log('could not report the coverage:', errorText(e));
  }
}

/** `--merge-coverage DIR`: every runner's coverage of a session, reported as one vitest run. */
async function mergeCoverage(dir) {
  const { api, version } = await loadVitest();
  const options = { watch: false, run: true, reporters: [{}], ui: false, open: false, api: false };
  const vitest = parseInt(version, 10) >= 5 ? await api.createVitest(options) : await api.createVitest('test', options);
  try {
    const provider = (await vitest.createCoverageProvider?.()) ?? vitest.coverageProvider;
    if (!provider) return 0;
    const map = provider.createCoverageMap();
    for (const name of fs.readdirSync(dir)) {
      const part = path.join(dir, name, 'coverage-final.json');
      if (/^vitest-\d+$/.test(name) && fs.existsSync(part)) map.merge(JSON.parse(fs.readFileSync(part, 'utf8')));
    }
    await provider.reportCoverage(map, { allTestsRun: true });
    return process.exitCode ?? 0;
  } finally {
    await Promise.race([vitest.close(), new Promise((resolve) => setTimeout(resolve, 20000).unref())]);
  }
}

async function main() {
  exitWithTheWorker();
  const socketPath = socketPathOrExit(log);
  // Whatever a test leaves behind must not kill the runner.
  process.on('unhandledRejection', (reason) => {
    log('unhandled rejection:', errorText(reason));
    if (running) running.errors.push(`Unhandled rejection: ${errorText(reason)}`);
  });
  process.on('uncaughtException', (error) => {
    log('uncaught exception:', errorText(error));
    if (running) running.errors.push(`Uncaught exception: ${errorText(error)}`);
  });
  // vitest's tests run in its test workers, never in this process: lines may wait for the turn's end.
  const channel = new Channel(socketPath, log, { batched: true });
  await channel.connected();
  const state = await startVitest(channel);
  // A runner of several slots is no slot's: its test workers (forked from here, later) must not
  // see the one it was started for.
  if (state.pipelined) delete process.env.TESTGRID_SLOT;
  // A runner that feeds vitest's pool serves every slot of its session on the worker.
  channel.send({ op: 'ready', pid: process.pid, shares: state.pipelined });
  if (state.pipelined) {
    // Each file goes to vitest's pool as it arrives; the pool runs one per busy slot.
    const inFlight = new Set();
    await serve(channel, (message) => {
      const run = runFile(state, channel, message).finally(() => inFlight.delete(run));
      inFlight.add(run);
    });
    await Promise.allSettled([...inFlight]);
  } else {
    await serve(channel, (message) => runFile(state, channel, message));
  }
  if (state.pipelined) {
    await updateResultsCache(state.vitest);
    await reportCoverage(state.vitest);
  }
  // Close vitest (its pool, coverage, vite server); never hang on it.
  const closing = state.vitest.close().catch((e) => log('closing vitest failed:', errorText(e)));
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 20000).unref())]);
  channel.end();
  process.exit(0);
}

if (process.argv[2] === '--merge-coverage') {
  mergeCoverage(process.argv[3]).then(
    (code) => process.exit(code),
    (e) => {
      log('merging the coverage failed:', errorText(e));
      process.exit(1);
    },
  );
} else {
  main().catch((e) => {
    log('fatal:', errorText(e));
    process.exit(1);
  });
}
