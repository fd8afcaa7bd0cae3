/** IPv4 arithmetic for validation and planning: addresses as unsigned 32-bit numbers. Pure. */

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseAddress(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatAddress(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

export interface Cidr {
  readonly network: number;
  readonly prefix: number;
}

export function parseCidr(text: string): Cidr | undefined {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(text);
  if (!m) return undefined;
  const address = parseAddress(m[1]!);
  const prefix = Number(m[2]);
  if (address === undefined || prefix > 32) return undefined;
  return { network: address, prefix };
}

function size(cidr: Cidr): number {
  return 2 ** (32 - cidr.prefix);
}

/** The network address of a prefix (host bits cleared). */
export function networkOf(cidr: Cidr): number {
  const block = size(cidr);
  return Math.floor(cidr.network / block) * block;
}

export function broadcastOf(cidr: Cidr): number {
  return networkOf(cidr) + size(cidr) - 1;
}

export function contains(cidr: Cidr, address: number): boolean {
  return address >= networkOf(cidr) && address <= broadcastOf(cidr);
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return networkOf(a) <= broadcastOf(b) && networkOf(b) <= broadcastOf(a);
}

export function formatCidr(cidr: Cidr): string {
  return `${formatAddress(networkOf(cidr))}/${cidr.prefix}`;
}
