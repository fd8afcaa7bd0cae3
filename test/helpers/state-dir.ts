/**
 * Loaded into every test process before its file (ava's `require`, package.json). What the product keeps between
 * runs, the clears a killed apply or start left to do, goes to `VLAN_GATEWAY_STATE_DIR`, else the machine's own
 * `/run/vlan-gateway/state`: a test that started a gateway without naming a directory left that one behind (empty
 * once its clears were done) and could read or clear what another test, or the machine's own gateway, had left there.
 * So each test process names its own, `/tmp/vgw-test-state-PID/state` (made by the product only when it writes
 * there, removed when the process ends or is interrupted); children inherit it. A test that wants a directory of its
 * own still sets the variable itself.
 */
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onInterrupt } from './interrupt.js';

const scratch = join(tmpdir(), `vgw-test-state-${process.pid}`);
process.env.VLAN_GATEWAY_STATE_DIR = join(scratch, 'state');

const remove = () => rmSync(scratch, { recursive: true, force: true });
process.once('exit', remove);
onInterrupt({ once: async () => remove(), again: async () => remove() });
