// Command hello is the floor of cold start: an empty CloudEvent function
// served by the functions framework, as cmd/local serves onNewImage.
package main

import (
	"context"
	"log"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/cloudevents/sdk-go/v2/event"
)

func init() {
	functions.CloudEvent("hello", func(context.Context, event.Event) error { return nil })
}

func main() {
	os.Setenv("FUNCTION_TARGET", "hello")
	if err := funcframework.StartHostPort("127.0.0.1", os.Getenv("PORT")); err != nil {
		log.Fatal(err)
	}
}
