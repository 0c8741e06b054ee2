"""The hostile-input suite: packages, repositories, trees and scripts built the way an attacker would, each
test asserting a one-line refusal and that nothing outside the target changed (docs/security.md)."""
