// Shared by testgrid's JavaScript runners (testgrid_vitest.mjs, testgrid_jest.cjs): the line
// channel to the worker and text helpers. The worker writes this file next to the runner.
'use strict';

const { createRequire } = require('node:module');
const net = require('node:net');
const path = require('node:path');

// Characters of message and output sent per case at most (head and tail kept).
const OUTPUT_LIMIT = 64 * 1024;
const MESSAGE_LIMIT = 2000;

function cap(text, limit = OUTPUT_LIMIT) {
  if (text.length <= limit) return text;
  const marker = '\n[... cut by the testgrid runner ...]\n';
  return text.slice(0, limit / 4) + marker + text.slice(text.length - (limit * 3) / 4 + marker.length);
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;?]*[ -/]*[@-~]/g;
const plain = (text) => String(text ?? '').replace(ANSI, '');

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * One JSON object per line each way over the worker's Unix socket. `batched`: lines sent in one
 * turn of the event loop go in one write (vitest's reporter hears a batch of its test workers'
 * results at once: a write, and a wakeup of the worker, per batch rather than per line). Only for
 * a runner whose tests run in other processes: a line held back is lost if the runner itself dies
 * before the turn ends.
 */
class Channel {
  constructor(socketPath, log, { batched = false } = {}) {
    this.batched = batched;
    this.held = [];
    this.socket = net.createConnection(socketPath);
    this.socket.setEncoding('utf8');
    this.buffer = '';
    this.queue = [];
    this.waiters = [];
    this.closed = false;
    this.socket.on('data', (chunk) => {
      this.buffer += chunk;
      let newline;
      while ((newline = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, newline).trim();
        this.buffer = this.buffer.slice(newline + 1);
        if (!line) continue;
        let message;
        try {
          message = JSON.parse(line);
        } catch {
          log('ignoring a line that is not JSON:', line.slice(0, 200));
          continue;
        }
        this.push(message);
      }
    });
    const end = () => {
      if (!this.closed) {
        this.closed = true;
        this.push(null);
      }
    };
    this.socket.on('end', end);
    this.socket.on('close', end);
    this.socket.on('error', (e) => {
      log('socket error:', e.message);
      end();
    });
  }

  connected() {
    return new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('error', reject);
    });
  }

  push(message) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(message);
    else this.queue.push(message);
  }

  /** The next message, or null at EOF. */
  receive() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(message) {
    const line = JSON.stringify(message) + '\n';
    if (!this.batched) {
      if (this.socket.writable) this.socket.write(line);
      return;
    }
    this.held.push(line);
    if (this.held.length === 1) setImmediate(() => this.flush());
  }

  /** Write the lines held back (see `batched`). */
  flush() {
    if (this.held.length === 0) return;
    const text = this.held.join('');
    this.held = [];
    if (this.socket.writable) this.socket.write(text);
  }

  /** Flush, then close the socket. */
  end() {
    this.flush();
    this.socket.end();
  }
}

/**
 * The framework as the project in the working directory resolves it (never the runner's own
 * folder): `require`, bound to the project, and the resolved path of `specifier`.
 */
function resolveFromProject(specifier, name) {
  const require = createRequire(path.join(process.cwd(), 'package.json'));
  try {
    return { require, entry: require.resolve(specifier) };
  } catch (e) {
    throw new Error(`cannot find ${name} from ${process.cwd()} (is it installed? run npm install): ${e.message}`);
  }
}

/** A `run` request's path: the file, and the case after `::` (null for the whole file). */
function splitUnitPath(message) {
  const given = String(message.path ?? '');
  const split = given.indexOf('::');
  return split >= 0 ? { file: given.slice(0, split), caseName: given.slice(split + 2) } : { file: given, caseName: null };
}

/** The worker's socket, from TESTGRID_RUNNER_SOCKET; exits 2 without one. */
function socketPathOrExit(log) {
  const socketPath = process.env.TESTGRID_RUNNER_SOCKET;
  if (!socketPath) {
    log('TESTGRID_RUNNER_SOCKET is not set');
    process.exit(2);
  }
  return socketPath;
}

/**
 * The worker reads this runner's stdout and stderr: when one of those pipes breaks, the worker is
 * gone, and so is the runner's reason to run. It exits then; writing on (a log line from an
 * `uncaughtException` handler, say) would raise the same error again, in a loop at full CPU.
 */
function exitWithTheWorker() {
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => process.exit(1));
}

/** Serve `run` requests one at a time, until `stop` or the end of the channel. */
async function serve(channel, runFile) {
  for (;;) {
    const message = await channel.receive();
    if (message === null || message.op === 'stop') break;
    if (message.op !== 'run') continue;
    await runFile(message);
  }
}

// prettier-ignore
/**
 * The session's arguments for the framework: what follows `--` on the runner's command line
 * (the user's own, after `--` on `testgrid run`), in the framework's command-line syntax.
 */
function sessionArgs() {
  const at = process.argv.indexOf('--');
  return at < 0 ? [] : process.argv.slice(at + 1);
}

module.exports = { OUTPUT_LIMIT, MESSAGE_LIMIT, cap, plain, escapeRegExp, Channel, resolveFromProject, splitUnitPath, socketPathOrExit, exitWithTheWorker, serve, sessionArgs };
