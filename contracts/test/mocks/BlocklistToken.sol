// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {DevToken} from "../../src/DevToken.sol";

/// @notice A token with an issuer blocklist, as USDC-style tokens have: any transfer from or to a blocklisted
/// address reverts.
contract BlocklistToken is DevToken {
    mapping(address account => bool) public blocked;

    error BlocklistToken_Blocked(address account);

    function setBlocked(address account, bool value) external {
        blocked[account] = value;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (blocked[from]) revert BlocklistToken_Blocked(from);
        if (blocked[to]) revert BlocklistToken_Blocked(to);
        super._update(from, to, value);
    }
}
