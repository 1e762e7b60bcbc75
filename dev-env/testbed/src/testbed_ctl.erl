%%% @doc A control node for gater-testkit: reads requests from stdin, one a line,
%%% `Id Target HexExpr', evaluates the Erlang expression (hex-encoded UTF-8) on Target
%%% (a node name, or `local' for the control node itself) and prints `Id ok Term' or
%%% `Id error Term' on one line; a binary result as `Id text Hex'.
-module(testbed_ctl).
-export([repl/0, eval/1]).

repl() ->
    io:format("testbed-ctl-ready~n"),
    loop().

loop() ->
    case io:get_line('') of
        eof -> erlang:halt(0);
        {error, _} -> erlang:halt(0);
        Line ->
            run_request(string:trim(Line)),
            loop()
    end.

%% Requests run one after another (the caller waits for each answer).
run_request(Line) ->
    case string:split(Line, " ", all) of
        [Id, Target, Hex] ->
            Expr = unicode:characters_to_list(binary:decode_hex(list_to_binary(Hex))),
            Result = case Target of
                         "local" -> eval(Expr);
                         Node -> case rpc:call(list_to_atom(Node), ?MODULE, eval, [Expr], 60000) of
                                     {badrpc, R} -> {error, {badrpc, R}};
                                     R -> R
                                 end
                     end,
            case Result of
                {ok, Bin} when is_binary(Bin) ->
                    io:format("~s text ~s~n", [Id, binary:encode_hex(Bin)]);
                {ok, V} -> print(Id, "ok", V);
                {error, E} -> print(Id, "error", E)
            end;
        _ ->
            io:format("bad-request error ~0tp~n", [Line])
    end.

print(Id, Tag, Term) ->
    Text = lists:flatten(io_lib:format("~0tp", [Term])),
    io:format("~s ~s ~ts~n", [Id, Tag, [C || C <- Text, C =/= $\n]]).

%% @doc Evaluates an expression (a trailing `.' is optional).
eval(Expr) ->
    try
        Src = case string:trim(Expr, trailing) of
                  S = [_ | _] -> case lists:last(S) of $. -> S; _ -> S ++ "." end;
                  _ -> "ok."
              end,
        {ok, Toks, _} = erl_scan:string(Src),
        {ok, Exprs} = erl_parse:parse_exprs(Toks),
        {value, V, _} = erl_eval:exprs(Exprs, []),
        {ok, V}
    catch C:R -> {error, {C, R}}
    end.
