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
