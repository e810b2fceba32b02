package cases

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Post adds a chat message to a case the caller may read. Members of a
// case's chat are exactly the users who can read the case, so an internal
// case's chat stays inside the operator tenant.
func (s *Service) Post(ctx context.Context, c *identity.Caller, caseID, body string) (store.ChatMessage, error) {
	cs, _, err := s.load(ctx, c, caseID)
	if err != nil {
		return store.ChatMessage{}, err
	}
	body = strings.TrimSpace(body)
	if body == "" || utf8.RuneCountInString(body) > MaxMessageLen || !utf8.ValidString(body) {
		return store.ChatMessage{}, errkind.Invalidf("body", "a message of 1..%d characters is required", MaxMessageLen)
	}
	m, err := s.repo.AddChatMessage(ctx, store.ChatMessage{CaseID: cs.ID, AuthorID: c.User.ID, AuthorName: c.User.DisplayName,
		AuthorTenantID: c.Tenant.ID, Body: body, At: s.now().UTC()})
	if err != nil {
		return store.ChatMessage{}, fmt.Errorf("post message: %w", err)
	}
	s.hub.publish(m)
	return m, nil
}

// Messages lists a case's chat, oldest first (the newest limit messages).
func (s *Service) Messages(ctx context.Context, c *identity.Caller, caseID string, limit int) ([]store.ChatMessage, error) {
	if _, _, err := s.load(ctx, c, caseID); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1000 {
		limit = 200
	}
	return s.repo.ListChatMessages(ctx, caseID, limit)
}

// Subscribe authorizes the caller for a case's chat and returns a channel
// of new messages, closed when ctx ends. Access is re-checked by the
// caller of Subscribe at connection time only; sessions are short.
func (s *Service) Subscribe(ctx context.Context, c *identity.Caller, caseID string) (<-chan store.ChatMessage, error) {
	if _, _, err := s.load(ctx, c, caseID); err != nil {
		return nil, err
	}
	return s.hub.subscribe(ctx, caseID), nil
}

// Hub fans chat messages out to live subscribers in this process.
// Safe for concurrent use. A slow subscriber loses messages rather than
// blocking posters (its buffer holds 64); it can re-read with Messages.
type Hub struct {
	mu   sync.Mutex
	subs map[string]map[chan store.ChatMessage]struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[string]map[chan store.ChatMessage]struct{}{}} }

func (h *Hub) subscribe(ctx context.Context, caseID string) <-chan store.ChatMessage {
	ch := make(chan store.ChatMessage, 64)
	h.mu.Lock()
	if h.subs[caseID] == nil {
		h.subs[caseID] = map[chan store.ChatMessage]struct{}{}
	}
	h.subs[caseID][ch] = struct{}{}
	h.mu.Unlock()
	go func() {
		<-ctx.Done()
		h.mu.Lock()
		delete(h.subs[caseID], ch)
		if len(h.subs[caseID]) == 0 {
			delete(h.subs, caseID)
		}
		h.mu.Unlock()
		close(ch)
	}()
	return ch
}

func (h *Hub) publish(m store.ChatMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs[m.CaseID] {
		select {
		case ch <- m:
		default:
		}
	}
}
