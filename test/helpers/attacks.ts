/** The registrations issue 9 found accepted over HTTP, with the rule each refusal must name (prefix-policy tests). */
export const ATTACKS: Array<[query: string, reason: RegExp]> = [
  ['vip=0.0.0.0/0', /vip: 0\.0\.0\.0\/0 is refused: a default route is never announced/],
  ['vip=::/0', /vip: ::\/0 is refused: a default route is never announced/],
  ['vip=203.0.113.0/24', /vip: 203\.0\.113\.0\/24 is refused: it is not inside agent\.allowed_prefixes \(198\.18\.0\.0\/15, 2001:db8::\/32\)/],
  ['vip=224.0.0.1/32', /multicast addresses \(224\.0\.0\.0\/4\) are never announced/],
  ['vip=127.0.0.1/32', /loopback addresses \(127\.0\.0\.0\/8\) are never announced/],
  ['vip=255.255.255.255/32', /the broadcast address \(255\.255\.255\.255\/32\) is never announced/],
  ['vip=0.0.0.0/1&vip=128.0.0.0/1', /vip\[0\]: 0\.0\.0\.0\/1 is refused: it is shorter than \/24.*vip\[1\]: 128\.0\.0\.0\/1 is refused: it is shorter than \/24/],
  ['vip=169.254.169.254/32', /link-local addresses \(169\.254\.0\.0\/16\)/],
  ['vip=198.18.200.9/32&vip_communities=blackhole', /vip_communities\[0\]: blackhole \(65535:666\) is a well-known or reserved community/],
  ['vip=198.18.200.9/32&vip_communities=no-export', /vip_communities\[0\]: no-export \(65535:65281\)/],
];
