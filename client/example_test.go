package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/wsgateway/wsgateway/client"
)

// The application saves Last after handling each message and passes it back as Since when
// it starts again, so a restart neither loses nor repeats messages. (Compiled, not run: it
// needs a gateway.)
func ExampleDial() {
	var saved int64 // loaded from the application's storage; 0 on the first run
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{
		URL: "wss://push.example.com/ws",
		Token: func(ctx context.Context) (string, error) {
			return "a JWT from your auth service", nil
		},
		Since: saved,
		OnEvent: func(e client.Event) {
			if e.Type == client.EventGap {
				log.Printf("messages %d..%d expired before they could be delivered", e.From, e.To)
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for m := range c.Messages() {
		fmt.Printf("%d: %s\n", m.Seq, m.Data)
		saved = c.Last()
	}
	if err := c.Err(); err != nil {
		log.Printf("the gateway ended the session: %v", err)
	}
}
