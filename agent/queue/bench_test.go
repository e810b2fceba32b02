package queue

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkAppend measures durable appends of 200-byte records from N
// concurrent producers (group commit) against a baseline without the
// queue that hands the same records to a consumer through a channel.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 3s ./agent/queue/
func BenchmarkAppend(b *testing.B) {
	payload := bytes.Repeat([]byte("v"), 200)
	run := func(b *testing.B, producers int, put func() error) {
		b.ReportAllocs()
		var wg sync.WaitGroup
		per := b.N/producers + 1
		b.ResetTimer()
		for p := 0; p < producers; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					if err := put(); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(per*producers)/b.Elapsed().Seconds(), "msgs/s")
	}
	for _, producers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("baseline-channel/producers=%d", producers), func(b *testing.B) {
			ch := make(chan []byte, 1024)
			done := make(chan struct{})
			go func() {
				for range ch {
				}
				close(done)
			}()
			run(b, producers, func() error { ch <- payload; return nil })
			close(ch)
			<-done
		})
		b.Run(fmt.Sprintf("durable-queue/producers=%d", producers), func(b *testing.B) {
			q, err := Open(b.TempDir(), Options{MaxBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			run(b, producers, func() error { _, err := q.Append(context.Background(), payload); return err })
			s := q.Stats()
			b.ReportMetric(float64(s.Appended)/float64(max(s.Syncs, 1)), "records/fsync")
		})
	}
}

// BenchmarkAppendOneProducer is the agent's telemetry pattern: one
// producer (the collector) appending records of 40 KB, waiting for each
// fsync (Append, before) or handing records over and going on
// (AppendAsync with at most 16 outstanding, after), so that records
// arriving during an fsync share the next one:
//
//	go test -run '^$' -bench BenchmarkAppendOneProducer -benchtime 2s ./agent/queue/
func BenchmarkAppendOneProducer(b *testing.B) {
	payload := bytes.Repeat([]byte("v"), 40<<10)
	open := func(b *testing.B) *Queue {
		q, err := Open(b.TempDir(), Options{MaxBytes: 1 << 30, SegmentBytes: 16 << 20})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { q.Close() })
		return q
	}
	report := func(b *testing.B, q *Queue) {
		s := q.Stats()
		b.ReportMetric(float64(s.Appended)/float64(max(s.Syncs, 1)), "records/fsync")
		b.ReportMetric(float64(s.Appended)/b.Elapsed().Seconds(), "records/s")
	}
	b.Run("before/Append", func(b *testing.B) {
		q := open(b)
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			if _, err := q.Append(context.Background(), payload); err != nil {
				b.Fatal(err)
			}
		}
		report(b, q)
	})
	b.Run("after/AppendAsync", func(b *testing.B) {
		q := open(b)
		sem := make(chan struct{}, 16)
		b.SetBytes(int64(len(payload)))
		for b.Loop() {
			sem <- struct{}{}
			if err := q.AppendAsync(context.Background(), payload, func(_ uint64, err error) {
				if err != nil {
					b.Error(err)
				}
				<-sem
			}); err != nil {
				b.Fatal(err)
			}
		}
		for range cap(sem) {
			sem <- struct{}{}
		}
		report(b, q)
	})
}
