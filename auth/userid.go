package auth

import (
	"errors"
	"fmt"
)

// MaxUserIDLen is the longest user_id ValidateUserID accepts.
const MaxUserIDLen = 64

// ValidateUserID checks that userID is safe to embed in a queue name, a Redis
// key and a file path: 1 to 64 of A-Z a-z 0-9 _ . - (the pattern
// ^[A-Za-z0-9_.-]{1,64}$), and not "." or "..". MoRAG itself does not check,
// so a Python-minted key may carry a user_id that fails here; Route then
// refuses it a GPU queue.
func ValidateUserID(userID string) error {
	const allowed = "user_id may only contain letters A-Z and a-z, digits, '_', '.' and '-', 1 to 64 characters"
	if userID == "" {
		return errors.New("user_id is empty; " + allowed)
	}
	if len(userID) > MaxUserIDLen {
		return fmt.Errorf("user_id is %d bytes long; %s", len(userID), allowed)
	}
	for i := 0; i < len(userID); i++ {
		c := userID[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
		if !ok {
			return fmt.Errorf("user_id %q contains %q at byte %d; %s", userID, userID[i:i+1], i, allowed)
		}
	}
	if userID == "." || userID == ".." {
		return fmt.Errorf("user_id %q is a path component; choose a name with a letter or digit", userID)
	}
	return nil
}
