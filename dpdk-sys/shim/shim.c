#include "shim.h"

uint16_t nfv_pktmbuf_headroom(void) { return RTE_PKTMBUF_HEADROOM; }

int nfv_errno(void) { return rte_errno; }

uint16_t nfv_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n,
                      uint8_t **data, uint32_t *len) {
    uint16_t got = rte_eth_rx_burst(port, queue, pkts, n);
    for (uint16_t i = 0; i < got; i++) {
        struct rte_mbuf *m = pkts[i];
        data[i] = m->nb_segs == 1 ? rte_pktmbuf_mtod(m, uint8_t *) : NULL;
        len[i] = m->pkt_len;
    }
    return got;
}

int nfv_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **pkts, uint16_t n, uint8_t **data,
                   uint16_t *room) {
    int rc = rte_pktmbuf_alloc_bulk(pool, pkts, n);
    if (rc != 0)
        return rc;
    for (uint16_t i = 0; i < n; i++) {
        data[i] = rte_pktmbuf_mtod(pkts[i], uint8_t *);
        room[i] = rte_pktmbuf_tailroom(pkts[i]);
    }
    return 0;
}

uint16_t nfv_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, const uint16_t *len,
                      uint16_t n) {
    for (uint16_t i = 0; i < n; i++) {
        pkts[i]->data_len = len[i];
        pkts[i]->pkt_len = len[i];
    }
    return rte_eth_tx_burst(port, queue, pkts, n);
}

const void *nfv_pktmbuf_read(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf) {
    return rte_pktmbuf_read(m, off, len, buf);
}
