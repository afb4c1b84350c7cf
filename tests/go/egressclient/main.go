// egressclient starts an egress through LiveKit's Go server SDK from a request JSON file written
// as LiveKit's docs write it for `lk egress start` (the lk CLI is not served by the Go module
// proxy), and prints the EgressInfo the server answers as JSON. The tests use it to check that
// pyegress workers serve the Go SDK's requests as LiveKit Egress does.
//
//	egressclient --url http://127.0.0.1:7880 --api-key K --api-secret S --type room-composite request.json
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func main() {
	url := flag.String("url", os.Getenv("LIVEKIT_URL"), "livekit-server URL")
	key := flag.String("api-key", os.Getenv("LIVEKIT_API_KEY"), "API key")
	secret := flag.String("api-secret", os.Getenv("LIVEKIT_API_SECRET"), "API secret")
	kind := flag.String("type", "room-composite", "room-composite|participant|track-composite|track|web")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the server's answer")
	flag.Parse()
	if flag.NArg() != 1 {
		fail("usage: egressclient [flags] REQUEST.json")
	}
	body, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fail(err.Error())
	}
	client := lksdk.NewEgressClient(*url, *key, *secret)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var info *livekit.EgressInfo
	switch *kind {
	case "room-composite":
		req := &livekit.RoomCompositeEgressRequest{}
		parse(body, req)
		info, err = client.StartRoomCompositeEgress(ctx, req)
	case "participant":
		req := &livekit.ParticipantEgressRequest{}
		parse(body, req)
		info, err = client.StartParticipantEgress(ctx, req)
	case "track-composite":
		req := &livekit.TrackCompositeEgressRequest{}
		parse(body, req)
		info, err = client.StartTrackCompositeEgress(ctx, req)
	case "track":
		req := &livekit.TrackEgressRequest{}
		parse(body, req)
		info, err = client.StartTrackEgress(ctx, req)
	case "web":
		req := &livekit.WebEgressRequest{}
		parse(body, req)
		info, err = client.StartWebEgress(ctx, req)
	default:
		fail("unknown --type " + *kind)
	}
	if err != nil {
		fail(err.Error())
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(info)
	if err != nil {
		fail(err.Error())
	}
	fmt.Println(string(out))
}

// parse reads the docs' JSON (proto field names, as `lk egress start` takes them).
func parse(body []byte, req proto.Message) {
	if err := protojson.Unmarshal(body, req); err != nil {
		fail("request: " + err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "egressclient:", msg)
	os.Exit(1)
}
