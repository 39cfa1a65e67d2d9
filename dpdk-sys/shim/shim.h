/* C shims for DPDK's inline fast-path functions (bindgen cannot bind a `static inline`).
 * Each works on a whole burst so that the Rust side makes one foreign call per burst, not one
 * per packet. */
#ifndef NFV_DPDK_SHIM_H
#define NFV_DPDK_SHIM_H

#include <stdint.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_dev.h>
#include <rte_version.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>

/* RTE_PKTMBUF_HEADROOM. */
uint16_t nfv_pktmbuf_headroom(void);

/* rte_errno of the calling thread. */
int nfv_errno(void);

/* rte_eth_rx_burst, then for each packet: data[i] = its data when it is one segment (NULL when
 * it is chained: read it with nfv_pktmbuf_read), len[i] = its packet length. */
uint16_t nfv_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n,
                      uint8_t **data, uint32_t *len);

/* rte_pktmbuf_alloc_bulk, then for each mbuf: data[i] = where its data starts, room[i] = its
 * tailroom. Returns 0 on success, negative when the pool has fewer than n mbufs free. */
int nfv_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **pkts, uint16_t n, uint8_t **data,
                   uint16_t *room);

/* Sets each mbuf's data and packet length to len[i] (the caller wrote that many bytes at the
 * data pointer nfv_alloc_bulk gave, len[i] <= its room), then rte_eth_tx_burst. Returns how many
 * the device took; the rest still belong to the caller. */
uint16_t nfv_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, const uint16_t *len,
                      uint16_t n);

/* rte_pktmbuf_read: a pointer to len bytes at off, in the mbuf if contiguous there, else
 * copied into buf; NULL when the packet is shorter than off + len. */
const void *nfv_pktmbuf_read(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf);

#endif
