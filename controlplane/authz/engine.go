package authz

// Engine holds many principals in memory for fast decisions by user ID.
//
// Concurrency: an Engine is immutable after NewEngine; any number of
// goroutines may call its methods. To change principals, build a new Engine
// and swap it atomically (e.g. with atomic.Pointer).
type Engine struct {
	byUser map[string]*Principal
}

// NewEngine indexes principals by user ID. Later duplicates win.
func NewEngine(principals []Principal) *Engine {
	e := &Engine{byUser: make(map[string]*Principal, len(principals))}
	for i := range principals {
		e.byUser[principals[i].UserID] = &principals[i]
	}
	return e
}

// Len is the number of principals.
func (e *Engine) Len() int { return len(e.byUser) }

// Decide is Decide for the principal with userID; unknown users are denied.
func (e *Engine) Decide(userID string, f Feature, min Level, r Resource) Decision {
	p, ok := e.byUser[userID]
	if !ok {
		return Decision{Reason: "unknown user"}
	}
	return Decide(*p, f, min, r)
}
