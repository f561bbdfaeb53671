package main

import "testing"

func TestDedupRemembersDeliveredIDs(t *testing.T) {
	d := newDedup(2)
	if mine, _ := d.claim("a"); !mine {
		t.Fatal("a new id is not the caller's to deliver")
	}
	mine, busy := d.claim("a")
	if mine || busy == nil {
		t.Fatalf("a second claim while a is in flight: mine=%v busy=%v; want to wait", mine, busy)
	}
	select {
	case <-busy:
		t.Fatal("busy closed before the delivery ended")
	default:
	}
	d.release("a", false) // not posted: the next delivery tries again
	select {
	case <-busy:
	default:
		t.Fatal("busy not closed when the delivery ended")
	}
	if mine, _ := d.claim("a"); !mine {
		t.Fatal("an id whose delivery failed is not delivered again")
	}
	d.release("a", true)
	if mine, busy := d.claim("a"); mine || busy != nil {
		t.Fatalf("a posted id: mine=%v busy=%v; want already delivered", mine, busy)
	}
	// Bounded: two more posted ids push the oldest out.
	for _, k := range []string{"b", "c"} {
		if mine, _ := d.claim(k); !mine {
			t.Fatalf("%s not new", k)
		}
		d.release(k, true)
	}
	if len(d.done) != 2 || len(d.order) != 2 {
		t.Fatalf("holds %d ids (%d in order), want at most 2", len(d.done), len(d.order))
	}
	if mine, _ := d.claim("a"); !mine {
		t.Error("the oldest id was not forgotten")
	}
	if mine, busy := d.claim("c"); mine || busy != nil {
		t.Error("the newest id was forgotten")
	}
}
