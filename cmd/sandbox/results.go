package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/onnewimage/onnewimage/internal/testenv/sandbox"
)

// resultTopic is the topic the demonstrations' function publishes its
// results to (RESULT_TOPIC).
const resultTopic = "deploy-results"

// resultPrinter prints the results a subscription to resultTopic receives,
// as a team's tooling would see them.
type resultPrinter struct {
	results *sandbox.Results
	mu      sync.Mutex
	printed map[string]bool
}

// results is the demonstration's printer; nil until subscribe.
var results *resultPrinter

// subscribe subscribes to resultTopic for the demonstration.
func subscribe(ctx context.Context, sb *sandbox.Sandbox) error {
	r, err := sb.Subscribe(ctx, "demo", resultTopic)
	if err != nil {
		return err
	}
	results = &resultPrinter{results: r, printed: map[string]bool{}}
	fmt.Printf("results: the function publishes each target's result to topic %s; subscription demo prints them (->)\n", resultTopic)
	return nil
}

// show prints the results of the decision lines that publish one: a
// target's, unless its rules kept the build out. It waits for them (a
// subscriber receives them shortly after the line is written).
func (p *resultPrinter) show(ctx context.Context, lines ...map[string]any) {
	if p == nil {
		return
	}
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, l := range lines {
		reason, _ := l["reason"].(string)
		if l["targetName"] == nil || l["targetName"] == "" || strings.HasPrefix(reason, "when.") {
			continue
		}
		m, err := p.results.Wait(wait, func(m sandbox.Received) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return !p.printed[m.ID] && m.Result.BuildID == l["buildId"] && m.Result.Target == l["targetName"]
		})
		if err != nil {
			fmt.Printf("  -> no result received for %v: %v\n", l["targetName"], err)
			continue
		}
		p.print(m)
	}
}

// follow prints every result not printed yet, as it arrives, until ctx
// ends.
func (p *resultPrinter) follow(ctx context.Context) {
	if p == nil {
		return
	}
	for {
		m, err := p.results.Wait(ctx, func(m sandbox.Received) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return !p.printed[m.ID]
		})
		if err != nil {
			return
		}
		p.print(m)
	}
}

func (p *resultPrinter) print(m sandbox.Received) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.printed[m.ID] = true
	fmt.Printf("  -> result on %s: outcome=%s target=%s build=%s commit=%.7s\n",
		resultTopic, m.Attributes["outcome"], m.Attributes["target"], m.Result.BuildID, m.Result.Commit)
}
