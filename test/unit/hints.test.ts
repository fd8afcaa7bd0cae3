/**
 * The hints an operator reads when the kernel refuses: each names the flag that fixes it, from the helper's own
 * words (as iptables, ip, ipset and sysctl print them).
 */
import test from 'ava';
import {
  lockFileHint, NET_ADMIN_HINT, NET_RAW_HINT, privilegeHint, setInUseHint, sysctlHint, withForwardingHint, XTABLES_LOCK_FILE_HINT,
} from '../../src/apply/hints.js';

test('a refusal for want of privilege names NET_ADMIN; an ipset socket refusal names NET_RAW; others name nothing', (t) => {
  t.is(privilegeHint('iptables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)'), NET_ADMIN_HINT);
  t.is(privilegeHint('RTNETLINK answers: Operation not permitted'), NET_ADMIN_HINT);
  t.is(privilegeHint("iptables-restore v1.8.9 (nf_tables): Can't open socket to ipset.\n"), NET_RAW_HINT);
  t.is(privilegeHint('iptables-restore: line 4 failed'), undefined);
});

test('a lock file that cannot be opened names the tmpfs for /run', (t) => {
  t.is(lockFileHint('Fatal: can\'t open lock file /run/xtables.lock: Read-only file system'), XTABLES_LOCK_FILE_HINT);
  t.is(lockFileHint('Another app is currently holding the xtables lock.'), undefined);
});

test('a sysctl refused in a read-only /proc/sys names the --sysctl flag with its key and value', (t) => {
  t.is(
    sysctlHint('net.ipv4.ip_forward', '1', 'sh: can\'t create /proc/sys/net/ipv4/ip_forward: Read-only file system'),
    '/proc/sys is read-only here (a container): start it with --sysctl net.ipv4.ip_forward=1 (docker run) or sysctls: [net.ipv4.ip_forward=1] (Compose)',
  );
  t.is(sysctlHint('net.ipv4.ip_forward', '1', 'sysctl: cannot stat /proc/sys/net/ipv4/ip_forward: No such file or directory'), undefined);
});

test('a set in use is said with the commands that find the rule holding it, in the other backend first', (t) => {
  t.is(
    setInUseHint('VGW-NICS-1', 'nft', 'ipset v7.17: Set cannot be destroyed: it is in use by a kernel component'),
    "a rule outside the gateway's chains still refers to it: in iptables-legacy (iptables-legacy-save | grep -w VGW-NICS-1), "
      + 'or in a table the gateway does not write (iptables-nft-save -t mangle, -t raw); delete that rule and run again',
  );
  t.is(setInUseHint('VGW-NICS-1', 'legacy', 'ipset v7.17: The set with the given name does not exist'), undefined);
});

const noPrivilege = `cannot read the interfaces: ${NET_ADMIN_HINT}`;
const ON_SYSCTL = 'add --sysctl net.ipv4.ip_forward=1 too (Compose: sysctls: [net.ipv4.ip_forward=1])';

test('a start without NET_ADMIN where forwarding is off in a read-only /proc/sys names both flags in one message', (t) => {
  t.is(
    withForwardingHint(noPrivilege, { value: '0', readOnly: true }),
    `${noPrivilege}; and net.ipv4.ip_forward is 0 in a read-only /proc/sys: ${ON_SYSCTL}`,
  );
});

test('the --sysctl hint is added only where it is the fix: forwarding off, /proc/sys read-only, and the message is the NET_ADMIN one', (t) => {
  t.is(withForwardingHint(noPrivilege, { value: '1', readOnly: true }), noPrivilege, 'forwarding is on already');
  t.is(withForwardingHint(noPrivilege, { value: '0', readOnly: false }), noPrivilege, 'the gateway switches it on itself');
  t.is(withForwardingHint(noPrivilege, undefined), noPrivilege, 'no /proc/sys to read');
  t.is(withForwardingHint('cannot read the interfaces: exit 1', { value: '0', readOnly: true }), 'cannot read the interfaces: exit 1', 'not a privilege refusal');
  const both = `${noPrivilege}; /proc/sys is read-only here (a container): start it with --sysctl net.ipv4.ip_forward=1 (docker run)`;
  t.is(withForwardingHint(both, { value: '0', readOnly: true }), both, 'the flag is named once');
});
