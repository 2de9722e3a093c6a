package pubsubemu_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/onnewimage/onnewimage/internal/testenv/pubsubemu"
)

// Example sends a Cloud Build-like message to a function listening on
// 127.0.0.1:8080 over the push path. It is compiled, not run: it needs gcloud.
func Example() {
	ctx := context.Background()
	emu, err := pubsubemu.Start(ctx, pubsubemu.Options{Log: os.Stderr})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer emu.Stop()

	if err := emu.CreateTopic(ctx, "cloud-builds"); err != nil {
		fmt.Println(err)
		return
	}
	if err := emu.CreatePushSubscription(ctx, pubsubemu.PushSubscription{
		ID:          "deploy-trigger",
		Topic:       "cloud-builds",
		Endpoint:    "http://127.0.0.1:8080/",
		AckDeadline: 10 * time.Second,
	}); err != nil {
		fmt.Println(err)
		return
	}
	id, err := emu.Publish(ctx, "cloud-builds",
		[]byte(`{"id":"b-123","status":"SUCCESS"}`),
		map[string]string{"buildId": "b-123", "status": "SUCCESS"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("published message", id)
}
