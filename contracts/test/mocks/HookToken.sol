// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {DevToken} from "../../src/DevToken.sol";

/// @notice A token that calls `onTokensReceived` on a receiver that registered a hook (as ERC-777 tokens do).
contract HookToken is DevToken {
    mapping(address account => bool) public hooked;

    function setHooked(address account, bool value) external {
        hooked[account] = value;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from != address(0) && hooked[to]) ITokensReceiver(to).onTokensReceived(from, value);
    }
}

interface ITokensReceiver {
    function onTokensReceived(address from, uint256 value) external;
}

/// @notice A receiver whose hook burns all the gas it is given, then fails.
contract GasBurningReceiver is ITokensReceiver {
    function onTokensReceived(address, uint256) external pure {
        while (true) {}
    }
}
