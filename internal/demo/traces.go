package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"go.opentelemetry.io/otel/attribute"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/engine"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// spanFile returns a tracer provider that appends every span, as one JSON
// line, to path as soon as it ends: a system killed with SIGKILL loses no
// span it finished. The demo reads the files to check that each
// conversation is one trace across the three systems.
func spanFile(path, system string) (trace.TracerProvider, func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	exporter, err := stdouttrace.New(stdouttrace.WithWriter(f))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	provider := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", system))))
	return provider, func() {
		_ = provider.Shutdown(context.Background())
		f.Close()
	}, nil
}

// spanLine is the part of an exported span the check reads.
type spanLine struct {
	SpanContext struct{ TraceID string }
	Parent      struct{ SpanID string }
	Attributes  []struct {
		Key   string
		Value struct{ Value any }
	}
}

// traceCheck reports, over every system's span file, how many
// conversations had spans, which of them were split over several traces,
// and which spans of emitted signals lost their sender's span (the trace
// context did not travel with the signal).
func traceCheck(dataDir string) (traced int, split, orphans []string, err error) {
	traces := map[string]map[string]bool{} // conversation -> trace ids
	files, err := filepath.Glob(filepath.Join(dataDir, "*.spans"))
	if err != nil {
		return 0, nil, nil, err
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return 0, nil, nil, err
		}
		lines := bufio.NewScanner(f)
		lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for lines.Scan() {
			var s spanLine
			if json.Unmarshal(lines.Bytes(), &s) != nil {
				continue // a line cut short by SIGKILL
			}
			attrs := map[string]string{}
			for _, a := range s.Attributes {
				attrs[a.Key] = fmt.Sprint(a.Value.Value)
			}
			conv, ok := attrs["baton.conversation"]
			if !ok {
				continue
			}
			if traces[conv] == nil {
				traces[conv] = map[string]bool{}
			}
			traces[conv][s.SpanContext.TraceID] = true
			if causation, err := baton.ParseTokenID(attrs["baton.causation"]); err == nil && !causation.IsZero() {
				id, _ := baton.ParseTokenID(conv)
				if s.Parent.SpanID == engine.ConversationSpanContext(id).SpanID().String() {
					orphans = append(orphans, attrs["baton.token"])
				}
			}
		}
		f.Close()
		if err := lines.Err(); err != nil {
			return 0, nil, nil, err
		}
	}
	for conv, ids := range traces {
		if len(ids) > 1 {
			split = append(split, conv)
		}
	}
	return len(traces), split, orphans, nil
}
