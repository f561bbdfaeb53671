package main

import "sync"

// dedup remembers which events were posted, so that a redelivery (the
// Broker retries when it did not hear our answer) is not posted twice. It
// holds at most max delivered ids, forgetting the oldest first, and tracks
// deliveries in progress so a redelivery that arrives meanwhile waits for
// the outcome instead of posting in parallel.
//
// It is per process: after a scale to zero, or on another replica, an id
// is new again. The Service runs one replica at most (max-scale 1) so that
// every delivery meets the same set.
type dedup struct {
	mu       sync.Mutex
	max      int
	done     map[string]struct{}
	order    []string // delivered ids, a ring; next is the oldest once full
	next     int
	inflight map[string]chan struct{}
}

func newDedup(max int) *dedup {
	return &dedup{max: max, done: map[string]struct{}{}, inflight: map[string]chan struct{}{}}
}

// claim decides what the caller does with key. mine: deliver it, then call
// release. Otherwise busy is nil when key was delivered already, or a
// channel closed when the delivery in progress ends (claim again then).
func (d *dedup) claim(key string) (mine bool, busy <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.done[key]; ok {
		return false, nil
	}
	if ch, ok := d.inflight[key]; ok {
		return false, ch
	}
	d.inflight[key] = make(chan struct{})
	return true, nil
}

// release ends the delivery of key claimed by the caller; delivered
// records it as posted.
func (d *dedup) release(key string, delivered bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch, ok := d.inflight[key]; ok {
		close(ch)
		delete(d.inflight, key)
	}
	if !delivered {
		return
	}
	if _, ok := d.done[key]; ok {
		return
	}
	if len(d.order) < d.max {
		d.order = append(d.order, key)
	} else {
		delete(d.done, d.order[d.next])
		d.order[d.next] = key
		d.next = (d.next + 1) % d.max
	}
	d.done[key] = struct{}{}
}
