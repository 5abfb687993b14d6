// Package redisnet holds the tests of direct Redis connections done
// safely: TLS (rediss://) with Celery's ssl_* parameters, Redis ACL users,
// Sentinel failover under a running worker, and a worker on a real
// network (network namespaces, a veth pair, an 80 ms / 1 % loss proxy,
// partitions). The same network tests run for gateway-mediated workers
// (package remote: the proxy and the partitions sit between the worker
// and the gateway), with the benchmarks of both modes over that link.
// It has no code of its own; the code is protocol's (NewPool),
// worker/runner's (lease loss) and remote's.
package redisnet
