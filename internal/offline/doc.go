// Package offline keeps messages for users with no live connection: one list per user,
// oldest first, capped at offline-max (oldest dropped) and expiring offline-ttl after its last
// push. Push is push-or-store in one atomic step: publish, and store only when nobody received
// it, so no message is lost or stuck between "nobody subscribed" and "the user just
// connected" (a connect subscribes, confirms, then drains).
//
// Redis keeps the lists in ws:offline:{id} and runs push-or-store as a Lua script; Memory is
// the single-node twin.
package offline
